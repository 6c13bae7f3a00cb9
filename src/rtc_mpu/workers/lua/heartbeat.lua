-- Runs after prelude.lua, which rtc_mpu.workers.store prepends.
-- KEYS: record, app index, active set.
-- ARGV: prefix, name, task id, token, lease ms, ended ttl ms, the node's capacity (units as text, 0 =
-- unlimited; '' = not reported), then field/value pairs to set.
local f = redis.call('HMGET', KEYS[1], 'state', 'fence', 'stop_requested', 'status', 'layout_id', 'users', 'stats')
if not f[1] or f[1] == '"ended"' then
  return {'gone'}
end
local fence = tonumber(f[2])
if fence == 0 or fence ~= tonumber(ARGV[4]) then
  return {'fenced'}
end
local now_text, now_ms = now()
local keys = stream_keys(KEYS[1])
local holder = lease_taken(keys, ARGV[2])
if holder then
  end_task(keys, '2', url_taken_reason(holder), 0, tonumber(ARGV[6]), now_text, now_ms)
  return {'url_taken', holder}
end
set_leases(keys, ARGV[2], tonumber(ARGV[5]))
local node = redis.call('HMGET', KEYS[1], 'node', 'cost')
if node[1] and node[1] ~= 'null' then
  -- Back in the node's load if a claim dropped it as stale while this worker could not heartbeat.
  redis.call('HSET', ARGV[1] .. ':load:' .. cjson.decode(node[1]), ARGV[2], node[2] or '0')
  if ARGV[7] ~= '' then
    redis.call('SET', ARGV[1] .. ':capacity:' .. cjson.decode(node[1]), ARGV[7], 'PX', tonumber(ARGV[6]))
  end
end
if f[3] == 'true' then
  -- A stop was requested: the task stays 'stopping', with the stop's reason, until it ends.
  for i = 8, #ARGV, 2 do
    if ARGV[i] ~= 'state' and ARGV[i] ~= 'reason' then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    end
  end
  redis.call('HSET', KEYS[1], 'state', '"stopping"')
elseif #ARGV > 7 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 8))
end
redis.call('HSET', KEYS[1], 'heartbeat_at', now_text, 'updated_at', now_text)
emit_status_change(f[1], f[4])
local g = redis.call('HMGET', KEYS[1], 'layout_id', 'users', 'stats')
if g[1] ~= f[5] then
  emit('task.layout_changed', '{"cause":"mixer","previous_layout_id":' .. (f[5] or 'null') .. '}')
end
if g[2] ~= f[6] then
  -- channel.user_joined / channel.user_left: the difference between the users lists.
  local before, after = {}, {}
  local ok_b, old = pcall(cjson.decode, f[6] or '[]')
  local ok_a, new = pcall(cjson.decode, g[2] or '[]')
  if ok_b and type(old) == 'table' then for _, u in ipairs(old) do before[u] = true end end
  if ok_a and type(new) == 'table' then
    for _, u in ipairs(new) do
      after[u] = true
      if not before[u] then emit('channel.user_joined', '{"user_id":' .. cjson.encode(u) .. '}') end
    end
  end
  if ok_b and type(old) == 'table' then
    for _, u in ipairs(old) do
      if not after[u] then emit('channel.user_left', '{"user_id":' .. cjson.encode(u) .. '}') end
    end
  end
end
if g[3] ~= f[7] then
  -- output.failed / output.recovered: an output's state moving into or out of trouble.
  local function states(text)
    local out = {}
    local ok, stats = pcall(cjson.decode, text or 'null')
    if ok and type(stats) == 'table' and type(stats['outputs']) == 'table' then
      for _, o in ipairs(stats['outputs']) do
        if type(o) == 'table' and type(o['output_id']) == 'string' then out[o['output_id']] = o end
      end
    end
    return out
  end
  local bad = {reconnecting = true, failed = true}
  local old, new = states(f[7]), states(g[3])
  for id, o in pairs(new) do
    local was = old[id] and old[id]['state'] or 'connecting'
    local err = type(o['error']) == 'string' and cjson.encode(o['error']) or 'null'
    local data = '{"output_id":' .. cjson.encode(id) .. ',"state":' .. cjson.encode(tostring(o['state'])) ..
      ',"error":' .. err .. '}'
    if bad[o['state']] and not bad[was] then
      emit('output.failed', data)
    elseif o['state'] == 'connected' and bad[was] then
      emit('output.recovered', data)
    end
  end
end
return {'ok', redis.call('HGETALL', KEYS[1])}
