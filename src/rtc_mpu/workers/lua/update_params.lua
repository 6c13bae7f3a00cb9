-- Runs after prelude.lua, which rtc_mpu.workers.store prepends.
-- KEYS: record, the app's custom layouts (hash). ARGV: params (JSON), the record's stream key as read
-- (JSON), custom layout ids the params name (JSON array of strings), the record's outputs_version as
-- read (the params carry the outputs read with it: an output added or removed since is never undone),
-- the store's prefix, the task's name (for the webhooks outbox).
local f = redis.call('HMGET', KEYS[1], 'state', 'stream_key', 'stop_requested', 'outputs_version')
if not f[1] or f[1] == '"ended"' then
  return {'missing'}
end
if f[3] == 'true' or f[1] == '"stopping"' then
  return {'stopping'}
end
if tonumber(f[4] or '0') ~= tonumber(ARGV[4]) then
  return {'retry'}
end
if f[2] ~= ARGV[2] then
  return {'url_changed'}
end
-- Atomically with the delete script's in-use check (see start.lua).
for _, id in ipairs(cjson.decode(ARGV[3])) do
  if redis.call('HEXISTS', KEYS[2], id) == 0 then
    return {'no_layout', id}
  end
end
local now_text = now()
redis.call('HINCRBY', KEYS[1], 'spec_version', 1)
redis.call('HSET', KEYS[1], 'params', ARGV[1], 'updated_at', now_text)
emit_for(ARGV[5], ARGV[6], 'task.layout_changed', '{"cause":"update"}')
return {'ok', redis.call('HGETALL', KEYS[1])}
