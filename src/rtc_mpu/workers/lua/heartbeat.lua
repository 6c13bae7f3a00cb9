-- Runs after prelude.lua, which rtc_mpu.workers.store prepends.
-- KEYS: record, app index, active set.
-- ARGV: prefix, name, task id, token, lease ms, ended ttl ms, then field/value pairs to set.
local f = redis.call('HMGET', KEYS[1], 'state', 'fence', 'stop_requested')
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
end
if f[3] == 'true' then
  -- A stop was requested: the task stays 'stopping', with the stop's reason, until it ends.
  for i = 7, #ARGV, 2 do
    if ARGV[i] ~= 'state' and ARGV[i] ~= 'reason' then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    end
  end
  redis.call('HSET', KEYS[1], 'state', '"stopping"')
elseif #ARGV > 6 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 7))
end
redis.call('HSET', KEYS[1], 'heartbeat_at', now_text, 'updated_at', now_text)
return {'ok', redis.call('HGETALL', KEYS[1])}
