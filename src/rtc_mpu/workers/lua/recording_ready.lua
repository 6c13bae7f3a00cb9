-- Runs after prelude.lua, which rtc_mpu.workers.store prepends.
-- A recording.ready event for a finished recording file, if token still holds the task (a worker
-- fenced out by a newer claim emits nothing). The record is not changed.
-- KEYS: record.
-- ARGV: prefix, name, token, the event's data (JSON object: output_id, name, size_bytes,
-- duration_seconds, start_time, url).
local f = redis.call('HMGET', KEYS[1], 'state', 'fence')
if not f[1] or f[1] == '"ended"' then
  return 'gone'
end
local fence = tonumber(f[2])
if fence == 0 or fence ~= tonumber(ARGV[3]) then
  return 'fenced'
end
emit('recording.ready', ARGV[4])
return 'ok'
