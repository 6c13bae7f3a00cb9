-- Runs after prelude.lua, which rtc_mpu.workers.store prepends.
-- KEYS: active set. ARGV: record key prefix ('{p}:task:'), idle ms. Names of the never-claimed tasks
-- whose record nobody touched for idle ms; their updated_at is set to now (one rescue per idle time).
local now_text, now_ms, now_s = now()
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local rec = ARGV[1] .. name
  local f = redis.call('HMGET', rec, 'state', 'fence', 'updated_at')
  if f[1] == '"queued"' and tonumber(f[2]) == 0 and (now_s - tonumber(f[3])) * 1000 >= tonumber(ARGV[2]) then
    redis.call('HSET', rec, 'updated_at', now_text)
    out[#out + 1] = name
  end
end
return out
