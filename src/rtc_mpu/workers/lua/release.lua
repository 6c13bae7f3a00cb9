-- Runs after prelude.lua, which rtc_mpu.workers.store prepends.
-- KEYS: record, app index, active set.
-- ARGV: prefix, name, task id, token, reason (JSON), cooldown ms, ended ttl ms.
-- A task whose stop was requested is not handed over: it ends (status 3, cooldown), as the user asked.
local f = redis.call('HMGET', KEYS[1], 'state', 'fence', 'stop_requested', 'status')
if not f[1] or f[1] == '"ended"' or tonumber(f[2]) ~= tonumber(ARGV[4]) then
  return {'fenced'}
end
local now_text, now_ms = now()
local keys = stream_keys(KEYS[1])
if f[3] == 'true' then
  end_task(keys, '3', '"stopped by the user"', tonumber(ARGV[6]), tonumber(ARGV[7]), now_text, now_ms)
  return {'ok', redis.call('HGETALL', KEYS[1])}
end
release_load(KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'state', '"queued"', 'status', '0', 'reason', ARGV[5], 'worker', 'null',
  'heartbeat_at', '0', 'updated_at', now_text)
emit_status_change(f[1], f[4])
for _, key in ipairs(keys) do
  local lease = ARGV[1] .. ':lease:' .. key
  if redis.call('GET', lease) == ARGV[2] then
    redis.call('PERSIST', lease)
  end
end
return {'ok', redis.call('HGETALL', KEYS[1])}
