-- Runs after prelude.lua. Claim an ingest for a worker, atomically with its node's capacity.
-- KEYS: record, fence counter, active set (ingests)[, the node's load].
-- ARGV: prefix, name, worker (JSON), lease ms, node (JSON or null), cost (units), capacity ('' = unlimited),
-- ended ttl ms.
local f = redis.call('HMGET', KEYS[1], 'state', 'stop_requested', 'fence', 'heartbeat_at', 'restarts', 'node')
if not f[1] or f[1] == '"ended"' then
  return {'gone'}
end
local lease_ms = tonumber(ARGV[4])
local now_text, now_ms, now_s = now()
local fence = tonumber(f[3])
if f[2] == 'true' then
  release_load(KEYS[1], ARGV[2])
  redis.call('HSET', KEYS[1], 'state', '"ended"', 'ingest_state', '"ended"', 'reason', '"stopped"',
    'updated_at', now_text)
  redis.call('SREM', KEYS[3], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[8]))
  return {'stopped'}
end
if fence > 0 and (now_s - tonumber(f[4])) * 1000 < lease_ms then
  return {'held'}
end
if KEYS[4] and ARGV[7] ~= '' then
  local load, others = node_load(KEYS[4], ARGV[2], ARGV[5], lease_ms, now_s)
  if others > 0 and load + tonumber(ARGV[6]) > tonumber(ARGV[7]) + 1e-9 then
    return {'no_capacity', tostring(load)}
  end
end
local token = redis.call('INCR', KEYS[2])
local restarts = tonumber(f[5])
if fence > 0 then
  restarts = restarts + 1
end
if f[6] and f[6] ~= 'null' and f[6] ~= ARGV[5] then
  redis.call('HDEL', ARGV[1] .. ':load:' .. cjson.decode(f[6]), ARGV[2])
end
if KEYS[4] then
  redis.call('HSET', KEYS[4], ARGV[2], ARGV[6])
end
redis.call('HSET', KEYS[1], 'fence', token, 'worker', ARGV[3], 'node', ARGV[5], 'cost', ARGV[6],
  'heartbeat_at', now_text, 'updated_at', now_text, 'restarts', restarts)
return {'ok', token}
