-- Runs after prelude.lua, which rtc_mpu.workers.store prepends.
-- KEYS: record, app index, active set.
-- ARGV: prefix, name, task id, token ('' = unclaimed), status, reason (JSON), cooldown ms, ended ttl ms.
local f = redis.call('HMGET', KEYS[1], 'state', 'fence')
if not f[1] or f[1] == '"ended"' then
  return {'gone'}
end
local fence = tonumber(f[2])
if ARGV[4] == '' then
  if fence ~= 0 then
    return {'fenced'}
  end
elseif fence == 0 or fence ~= tonumber(ARGV[4]) then
  return {'fenced'}
end
local now_text, now_ms = now()
end_task(stream_keys(KEYS[1]), ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]), now_text, now_ms)
return {'ok', redis.call('HGETALL', KEYS[1])}
