-- Runs after prelude.lua. A worker ends its ingest (fenced: only the current claim can).
-- KEYS: record, active set (ingests).
-- ARGV: prefix, name, fence, ingest state (JSON), reason (JSON), position fields (JSON object), ended ttl ms.
local f = redis.call('HMGET', KEYS[1], 'state', 'fence')
if not f[1] or f[1] == '"ended"' or f[2] ~= ARGV[3] then
  return {'fenced'}
end
local now_text = now()
for field, value in pairs(cjson.decode(ARGV[6])) do
  redis.call('HSET', KEYS[1], field, value)
end
release_load(KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'state', '"ended"', 'ingest_state', ARGV[4], 'reason', ARGV[5],
  'updated_at', now_text, 'heartbeat_at', now_text)
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[7]))
return {'ok'}
