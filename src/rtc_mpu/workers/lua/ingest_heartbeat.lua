-- Runs after prelude.lua. A running ingest's heartbeat with its progress; answers the host's controls.
-- KEYS: record[, the node's load].
-- ARGV: prefix, name, fence, progress fields (JSON object: field -> JSON text), cost.
local f = redis.call('HMGET', KEYS[1], 'state', 'fence', 'stop_requested', 'control', 'control_version')
if not f[1] or f[1] == '"ended"' or f[2] ~= ARGV[3] then
  return {'fenced'}
end
local now_text = now()
for field, value in pairs(cjson.decode(ARGV[4])) do
  redis.call('HSET', KEYS[1], field, value)
end
redis.call('HSET', KEYS[1], 'heartbeat_at', now_text, 'updated_at', now_text)
if KEYS[2] then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[5])
end
return {'ok', f[4], f[5], f[3]}
