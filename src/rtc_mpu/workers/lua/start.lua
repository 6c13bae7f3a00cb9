-- Runs after prelude.lua, which rtc_mpu.workers.store prepends.
-- KEYS: record, app index, active set, the app's custom layouts (hash, rtc_mpu.workers.layout_store).
-- ARGV: prefix, name, task id, stream keys to lease (JSON array), custom layout ids the task names
-- (JSON array of strings), then field/value pairs of the record.
-- All the leases or none: each key must be free (or held by an ended task) and not cooling down.
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= '"ended"' then
  return {'exists'}
end
local keys = cjson.decode(ARGV[4])
local refusal = lease_refusal(keys, nil)
if refusal then
  return refusal
end
-- The custom layouts it names must still exist: checked here, atomically with the delete script's
-- check for active tasks that list a layout, so a layout is never deleted under a starting task.
for _, id in ipairs(cjson.decode(ARGV[5])) do
  if redis.call('HEXISTS', KEYS[4], id) == 0 then
    return {'no_layout', id}
  end
end
local now_text, now_ms = now()
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('HSET', KEYS[1], 'created_at', now_text, 'updated_at', now_text)
set_leases(keys, ARGV[2], nil)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
redis.call('ZADD', KEYS[2], '+inf', ARGV[3])
redis.call('PERSIST', KEYS[2])
redis.call('SADD', KEYS[3], ARGV[2])
emit('task.started', nil)
return {'ok', redis.call('HGETALL', KEYS[1])}
