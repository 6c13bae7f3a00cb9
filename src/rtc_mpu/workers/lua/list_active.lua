-- KEYS: active set. ARGV: record key prefix ('{p}:task:'). Records of all active tasks.
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local rec = redis.call('HGETALL', ARGV[1] .. name)
  if #rec > 0 then
    out[#out + 1] = rec
  end
end
return out
