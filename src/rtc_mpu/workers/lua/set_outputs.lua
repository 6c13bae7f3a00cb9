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
local refusal = lease_refusal(take, name)
if refusal then
  return refusal
end
-- A claimed task's leases expire unless its worker renews them; a queued task's wait for the claim.
if tonumber(f[4] or '0') > 0 then
  set_leases(take, name, tonumber(ARGV[11]))
else
  set_leases(take, name, nil)
end
release_leases(cjson.decode(ARGV[10]), name, tonumber(ARGV[12]))
local now_text = now()
redis.call('HINCRBY', KEYS[1], 'spec_version', 1)
redis.call('HSET', KEYS[1], 'outputs_version', tonumber(f[3] or '0') + 1, 'params', ARGV[4],
  'lease_keys', ARGV[5], 'output_leases', ARGV[6], 'last_output', ARGV[7], 'stream_key', ARGV[8],
  'updated_at', now_text)
emit('task.outputs_changed', nil)
return {'ok', redis.call('HGETALL', KEYS[1])}
