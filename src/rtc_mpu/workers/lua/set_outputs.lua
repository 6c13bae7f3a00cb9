-- Runs after prelude.lua, which rtc_mpu.workers.store prepends.
-- Adds or removes outputs of an active task, atomically with their StreamURL leases.
-- KEYS: record.
-- ARGV: prefix, name, outputs_version as read, params (JSON), lease_keys (JSON), output_leases (JSON),
-- last_output, stream_key (JSON), keys to lease (JSON array), keys to release (JSON array), lease ms,
-- cooldown ms.
-- Keys to lease: all or none, each free (or held by an ended task) and not cooling down. Keys to
-- release: each lease that names the task is deleted and gets its own cooldown.
local f = redis.call('HMGET', KEYS[1], 'state', 'stop_requested', 'outputs_version', 'fence')
if not f[1] or f[1] == '"ended"' then
  return {'missing'}
end
if f[2] == 'true' or f[1] == '"stopping"' then
  return {'stopping'}
end
if tonumber(f[3] or '0') ~= tonumber(ARGV[3]) then
  return {'retry'}
end
local name = ARGV[2]
local take = cjson.decode(ARGV[9])
for _, key in ipairs(take) do
  local holder = redis.call('GET', ARGV[1] .. ':lease:' .. key)
  if holder and holder ~= name then
    local holder_state = redis.call('HGET', ARGV[1] .. ':task:' .. holder, 'state')
    if holder_state and holder_state ~= '"ended"' then
      return {'in_use', holder, key}
    end
  end
end
local cooling = nil
for _, key in ipairs(take) do
  local pttl = redis.call('PTTL', ARGV[1] .. ':cooldown:' .. key)
  if pttl ~= -2 and (cooling == nil or pttl > cooling) then
    cooling = pttl
  end
end
if cooling ~= nil then
  return {'cooling', cooling}
end
-- A claimed task's leases expire unless its worker renews them; a queued task's wait for the claim.
if tonumber(f[4] or '0') > 0 then
  set_leases(take, name, tonumber(ARGV[11]))
else
  set_leases(take, name, nil)
end
local cooldown_ms = tonumber(ARGV[12])
for _, key in ipairs(cjson.decode(ARGV[10])) do
  local lease = ARGV[1] .. ':lease:' .. key
  local holder = redis.call('GET', lease)
  if holder == name then
    redis.call('DEL', lease)
  end
  if cooldown_ms > 0 and (not holder or holder == name) then
    redis.call('SET', ARGV[1] .. ':cooldown:' .. key, name, 'PX', cooldown_ms)
  end
end
local now_text = now()
redis.call('HINCRBY', KEYS[1], 'spec_version', 1)
redis.call('HSET', KEYS[1], 'outputs_version', tonumber(f[3] or '0') + 1, 'params', ARGV[4],
  'lease_keys', ARGV[5], 'output_leases', ARGV[6], 'last_output', ARGV[7], 'stream_key', ARGV[8],
  'updated_at', now_text)
return {'ok', redis.call('HGETALL', KEYS[1])}
