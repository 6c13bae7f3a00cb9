-- Runs after prelude.lua, which rtc_mpu.workers.store prepends.
-- KEYS: record, app index, active set, fence counter[, the node's load].
-- ARGV: prefix, name, task id, worker (JSON), lease ms, cooldown ms, ended ttl ms, node (JSON, null
-- without a node), cost (units, JSON number), capacity (units; '' = unlimited), reason when refused (JSON).
local f = redis.call('HMGET', KEYS[1], 'state', 'stop_requested', 'fence', 'heartbeat_at', 'stream_key',
  'restarts', 'node', 'status')
if not f[1] or f[1] == '"ended"' then
  return {'gone'}
end
local lease_ms, cooldown_ms, ttl_ms = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local now_text, now_ms, now_s = now()
local fence = tonumber(f[3])
if fence > 0 and (now_s - tonumber(f[4])) * 1000 < lease_ms then
  return {'held'}
end
local keys = stream_keys(KEYS[1])
if f[2] == 'true' then
  end_task(keys, '3', '"stopped by the user"', cooldown_ms, ttl_ms, now_text, now_ms)
  return {'stopped'}
end
local holder = lease_taken(keys, ARGV[2])
if holder then
  end_task(keys, '2', url_taken_reason(holder), 0, ttl_ms, now_text, now_ms)
  return {'url_taken', holder}
end
local load = 0
if KEYS[5] then
  -- The node's capacity as its worker last reported it (0 = unlimited), for the dashboard.
  redis.call('SET', ARGV[1] .. ':capacity:' .. cjson.decode(ARGV[8]), ARGV[10] ~= '' and ARGV[10] or '0',
    'PX', ttl_ms)
  local others
  load, others = node_load(KEYS[5], ARGV[2], ARGV[8], lease_ms, now_s)
  -- A task bigger than the whole capacity still runs on an idle node (else it never would).
  if ARGV[10] ~= '' and others > 0 and load + tonumber(ARGV[9]) > tonumber(ARGV[10]) + 1e-9 then
    if fence == 0 then
      redis.call('HSET', KEYS[1], 'reason', ARGV[11], 'updated_at', now_text)
    end
    return {'no_capacity', tostring(load), tostring(fence)}
  end
end
local token = redis.call('INCR', KEYS[4])
local restarts = tonumber(f[6])
local reason = '"starting"'
if fence > 0 then
  restarts = restarts + 1
  if tonumber(f[4]) == 0 then
    reason = '"restarting: taking over from the previous worker, which handed the task over"'
  else
    reason = '"restarting: taking over from the previous worker, which stopped heartbeating"'
  end
end
if f[7] and f[7] ~= 'null' and f[7] ~= ARGV[8] then
  redis.call('HDEL', ARGV[1] .. ':load:' .. cjson.decode(f[7]), ARGV[2])
end
if KEYS[5] then
  redis.call('HSET', KEYS[5], ARGV[2], ARGV[9])
end
redis.call('HSET', KEYS[1], 'fence', token, 'worker', ARGV[4], 'state', '"starting"', 'status', '0',
  'reason', reason, 'heartbeat_at', now_text, 'updated_at', now_text, 'restarts', restarts,
  'node', ARGV[8], 'cost', ARGV[9])
set_leases(keys, ARGV[2], lease_ms)
emit_status_change(f[1], f[8])
return {'ok', token, tostring(load)}
