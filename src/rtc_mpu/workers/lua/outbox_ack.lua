-- KEYS: an outbox (list of event JSON texts), the set of outboxes. ARGV: the outbox's name, the id of
-- the event delivered. Pops the head if it is that event; drops the name from the set once empty.
local head = redis.call('LINDEX', KEYS[1], 0)
local popped = 0
if head and string.find(head, '{"id":"' .. ARGV[2] .. '"', 1, true) == 1 then
  redis.call('LPOP', KEYS[1])
  popped = 1
end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
end
return popped
