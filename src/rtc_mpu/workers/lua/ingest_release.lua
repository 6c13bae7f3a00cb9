-- Runs after prelude.lua. A worker that shuts down gives its ingest back (fenced): the next claim,
-- by any worker, succeeds at once (heartbeat 0), and resumes where the progress says.
-- KEYS: record.
-- ARGV: prefix, name, fence, progress fields (JSON object).
local f = redis.call('HMGET', KEYS[1], 'state', 'fence')
if not f[1] or f[1] == '"ended"' or f[2] ~= ARGV[3] then
  return {'fenced'}
end
local now_text = now()
for field, value in pairs(cjson.decode(ARGV[4])) do
  redis.call('HSET', KEYS[1], field, value)
end
release_load(KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'heartbeat_at', '0', 'updated_at', now_text,
  'reason', '"restarting: its worker is shutting down"')
return {'ok'}
