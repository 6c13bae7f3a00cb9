-- Runs after prelude.lua. The host changes an ingest (PATCH), or stops it (DELETE).
-- KEYS: record, active set (ingests).
-- ARGV: prefix, name, 'control' or 'stop', the change (JSON object, for control), lease ms, ended ttl ms.
local f = redis.call('HMGET', KEYS[1], 'state', 'control', 'control_version', 'fence', 'heartbeat_at')
if not f[1] then
  return {'missing'}
end
if f[1] == '"ended"' then
  return {'ended'}
end
local now_text, now_ms, now_s = now()
if ARGV[3] == 'stop' then
  redis.call('HSET', KEYS[1], 'stop_requested', 'true', 'updated_at', now_text)
  -- Nobody runs it (never claimed, or its worker died): it ends now.
  if tonumber(f[4]) == 0 or (now_s - tonumber(f[5])) * 1000 >= tonumber(ARGV[5]) then
    release_load(KEYS[1], ARGV[2])
    redis.call('HSET', KEYS[1], 'state', '"ended"', 'ingest_state', '"ended"', 'reason', '"stopped"')
    redis.call('SREM', KEYS[2], ARGV[2])
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[6]))
  end
  return {'ok'}
end
local control = cjson.decode(f[2])
for key, value in pairs(cjson.decode(ARGV[4])) do
  control[key] = value
end
local version = tonumber(f[3]) + 1
control['version'] = version
redis.call('HSET', KEYS[1], 'control', cjson.encode(control), 'control_version', version,
  'updated_at', now_text)
return {'ok', tostring(version)}
