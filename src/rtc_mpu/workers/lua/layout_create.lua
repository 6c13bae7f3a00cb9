-- KEYS: layouts hash, id counter. ARGV: limit, first id, the layout's JSON without its "id" member
-- (starting with '{"name":...', so the script prepends '{"id":<id>,').
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return {'limit'}
end
local first = tonumber(ARGV[2])
local id = redis.call('INCR', KEYS[2])
if id < first then
  redis.call('SET', KEYS[2], first)
  id = first
end
redis.call('HSET', KEYS[1], id, '{"id":' .. id .. ',' .. string.sub(ARGV[3], 2))
return {'ok', id}
