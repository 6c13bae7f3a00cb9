-- KEYS: layouts hash, the app's task index. ARGV: layout id, task key prefix ('{p}:task:<app>/'),
-- how many TaskIds to return.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return {'missing'}
end
local layout_id = tonumber(ARGV[1])
local named, limit, count = {}, tonumber(ARGV[3]), 0
for _, task_id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '+inf', '+inf')) do
  local f = redis.call('HMGET', ARGV[2] .. task_id, 'state', 'params')
  if f[1] and f[1] ~= '"ended"' and f[2] then
    local ok, params = pcall(cjson.decode, f[2])
    if ok and type(params) == 'table' and type(params['layout_ids']) == 'table' then
      for _, listed in ipairs(params['layout_ids']) do
        if tonumber(listed) == layout_id then
          count = count + 1
          if #named < limit then
            named[#named + 1] = task_id
          end
          break
        end
      end
    end
  end
end
if count > 0 then
  return {'in_use', count, unpack(named)}
end
redis.call('HDEL', KEYS[1], ARGV[1])
return {'ok'}
