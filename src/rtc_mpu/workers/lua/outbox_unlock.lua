-- KEYS: an outbox's delivery lock. ARGV: the holder's token. Deleted if this holder's.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
