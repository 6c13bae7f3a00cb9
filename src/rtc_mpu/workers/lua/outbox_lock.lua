-- KEYS: an outbox's delivery lock. ARGV: the holder's token, ms. Taken (or renewed) when free or
-- already this holder's: 1; else 0.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
