-- KEYS: the app's outbox ('{p}:outbox:<app_id>/'), its sequence, the set of outboxes, the notify list.
-- ARGV: the outbox's name ('<app_id>/'), the app id (JSON). A ping event for the app's endpoints.
local seq = redis.call('INCR', KEYS[2])
local t = redis.call('TIME')
local at = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local id = 'evt_' .. string.sub(redis.sha1hex(ARGV[1] .. '|' .. seq .. '|' .. at), 1, 24)
redis.call('RPUSH', KEYS[1], '{"id":"' .. id .. '","type":"ping","sequence":' .. seq .. ',"at":' .. at ..
  ',"data":null,"record":null,"app_id":' .. ARGV[2] .. '}')
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('RPUSH', KEYS[4], ARGV[1])
redis.call('LTRIM', KEYS[4], -1000, -1)
return id
