-- Runs after prelude.lua. Create an ingest record (issue 19).
-- KEYS: record, app index (ingests), active set (ingests).
-- ARGV: prefix, name, fields (JSON object: field -> JSON text), cost (units), channel_id (JSON), user_id (JSON),
-- the app's name prefix ('<app_id>/ingest:').
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= '"ended"' then
  return {'exists'}
end
-- Another active ingest of the app publishing as this user in this channel.
for _, other in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if string.sub(other, 1, #ARGV[7]) == ARGV[7] then
    local o = redis.call('HMGET', ARGV[1] .. ':task:' .. other, 'state', 'channel_id', 'user_id')
    if o[1] and o[1] ~= '"ended"' and o[2] == ARGV[5] and o[3] == ARGV[6] then
      return {'user_in_use', other}
    end
  end
end
local now_text = now()
redis.call('DEL', KEYS[1])
for field, value in pairs(cjson.decode(ARGV[3])) do
  redis.call('HSET', KEYS[1], field, value)
end
redis.call('HSET', KEYS[1], 'state', '"active"', 'fence', '0', 'heartbeat_at', '0', 'node', 'null',
  'cost', ARGV[4], 'created_at', now_text, 'updated_at', now_text, 'restarts', '0',
  'stop_requested', 'false', 'control', '{}', 'control_version', '0', 'worker', 'null')
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
return {'ok', now_text}
