-- KEYS: app index. ARGV: record key prefix ('{p}:task:<app_id>/'). Records of the app, still stored.
local out = {}
for _, task_id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local rec = redis.call('HGETALL', ARGV[1] .. task_id)
  if #rec > 0 then
    out[#out + 1] = rec
  end
end
return out
