-- Runs after prelude.lua, which rtc_mpu.workers.store prepends.
-- KEYS: record, app index, active set.
-- ARGV: prefix, name, task id, lease ms, cooldown ms, ended ttl ms, reason while stopping (JSON).
-- Without a live worker the task ends at once; with one it is 'stopping' (its status unchanged) until
-- the worker has ended the push; a task already stopping is left as it is.
local f = redis.call('HMGET', KEYS[1], 'state', 'fence', 'heartbeat_at', 'stop_requested', 'status')
if not f[1] then
  return {'missing'}
end
if f[1] ~= '"ended"' then
  local now_text, now_ms, now_s = now()
  if tonumber(f[2]) == 0 or (now_s - tonumber(f[3])) * 1000 >= tonumber(ARGV[4]) then
    redis.call('HSET', KEYS[1], 'stop_requested', 'true')
    end_task(stream_keys(KEYS[1]), '3', '"stopped by the user"', tonumber(ARGV[5]), tonumber(ARGV[6]),
      now_text, now_ms)
  elseif f[4] ~= 'true' then
    redis.call('HSET', KEYS[1], 'stop_requested', 'true', 'state', '"stopping"', 'reason', ARGV[7],
      'updated_at', now_text)
    emit_status_change(f[1], f[5])
  end
end
return {'ok', redis.call('HGETALL', KEYS[1])}
