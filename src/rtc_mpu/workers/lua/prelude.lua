-- Prepended to the task store's scripts that need it (rtc_mpu.workers.store.load_script).
-- Shared Lua: the server's time, and ending a task (lease, cooldown, indexes, TTL).
local function now()
  local t = redis.call('TIME')
  local usec = tonumber(t[2])
  return t[1] .. '.' .. string.format('%06d', usec), tonumber(t[1]) * 1000 + math.floor(usec / 1000),
    tonumber(t[1]) + usec / 1000000
end

-- The task's entry in the load of the node it was claimed by, if any (ARGV[1] prefix).
local function release_load(rec, name)
  local node = redis.call('HGET', rec, 'node')
  if node and node ~= 'null' then
    redis.call('HDEL', ARGV[1] .. ':load:' .. cjson.decode(node), name)
  end
end

-- The load of a worker node (its hash load_key: entry name -> cost), without entry name: the costs
-- of its live entries, and how many there are. An entry is live while its record (a task's, or an
-- ingest's under the same key scheme: ARGV[1] .. ':task:' .. name) is not ended, is claimed by
-- node_json and heartbeats (younger than lease_ms); the other entries are dropped here, so a dead
-- worker's load never blocks its node for good.
local function node_load(load_key, name, node_json, lease_ms, now_s)
  local load, others = 0, 0
  local entries = redis.call('HGETALL', load_key)
  for i = 1, #entries, 2 do
    local other = entries[i]
    if other ~= name then
      local o = redis.call('HMGET', ARGV[1] .. ':task:' .. other, 'state', 'fence', 'heartbeat_at', 'node')
      if not o[1] or o[1] == '"ended"' or tonumber(o[2]) == 0 or o[4] ~= node_json
          or (now_s - tonumber(o[3])) * 1000 >= lease_ms then
        redis.call('HDEL', load_key, other)
      else
        load = load + tonumber(entries[i + 1])
        others = others + 1
      end
    end
  end
  return load, others
end

-- The task's stream keys (the names of its leases and cooldowns): the record's lease_keys, or its
-- stream_key alone for a record written before lease_keys existed.
local function stream_keys(rec)
  local f = redis.call('HMGET', rec, 'lease_keys', 'stream_key')
  if f[1] then
    local keys = cjson.decode(f[1])
    if type(keys) == 'table' and #keys > 0 then
      return keys
    end
  end
  return {cjson.decode(f[2])}
end

-- Another task holding one of the leases of keys, and that key; nil if none (ARGV[1] prefix).
local function lease_taken(keys, name)
  for _, key in ipairs(keys) do
    local holder = redis.call('GET', ARGV[1] .. ':lease:' .. key)
    if holder and holder ~= name then
      return holder, key
    end
  end
  return nil
end

-- Every lease of keys to name, with a TTL of ttl_ms, or none when ttl_ms is nil (ARGV[1] prefix).
local function set_leases(keys, name, ttl_ms)
  for _, key in ipairs(keys) do
    if ttl_ms then
      redis.call('SET', ARGV[1] .. ':lease:' .. key, name, 'PX', ttl_ms)
    else
      redis.call('SET', ARGV[1] .. ':lease:' .. key, name)
    end
  end
end

-- Why keys cannot be leased to name; nil when all are free (ARGV[1] prefix). A lease held by an
-- ended task is free. Else {'in_use', ...} when another active task holds any of them, {'cooling', ...}
-- when none is held but some cool down, followed by one triple per refused key in the order of keys:
-- (key, 'in_use', the holder's name) or (key, 'cooling', the ms of cooldown left; -1: no TTL).
local function lease_refusal(keys, name)
  local refused, in_use = {}, false
  for _, key in ipairs(keys) do
    local holder = redis.call('GET', ARGV[1] .. ':lease:' .. key)
    local taken = false
    if holder and holder ~= name then
      local holder_state = redis.call('HGET', ARGV[1] .. ':task:' .. holder, 'state')
      taken = holder_state and holder_state ~= '"ended"'
    end
    if taken then
      in_use = true
      table.insert(refused, key)
      table.insert(refused, 'in_use')
      table.insert(refused, holder)
    else
      local pttl = redis.call('PTTL', ARGV[1] .. ':cooldown:' .. key)
      if pttl ~= -2 then
        table.insert(refused, key)
        table.insert(refused, 'cooling')
        table.insert(refused, pttl)
      end
    end
  end
  if #refused == 0 then
    return nil
  end
  table.insert(refused, 1, in_use and 'in_use' or 'cooling')
  return refused
end

-- Each lease of keys that names name is deleted, and gets its own cooldown of cooldown_ms (when > 0)
-- unless another task holds it (ARGV[1] prefix).
local function release_leases(keys, name, cooldown_ms)
  for _, key in ipairs(keys) do
    local lease = ARGV[1] .. ':lease:' .. key
    local holder = redis.call('GET', lease)
    if holder == name then
      redis.call('DEL', lease)
    end
    if cooldown_ms > 0 and (not holder or holder == name) then
      redis.call('SET', ARGV[1] .. ':cooldown:' .. key, name, 'PX', cooldown_ms)
    end
  end
end

-- The webhooks outbox (rtc_mpu.workers.store, "Events"): appends an event about the task KEYS[1]
-- (ARGV[1] prefix, ARGV[2] name '<app_id>/<task_id>') to its outbox when its app has webhooks, in the
-- same script as the change it describes. data_json: the event's "data" member (JSON text) or nil.
local function emit_for(prefix, name, kind, data_json)
  local app = string.match(name, '^(.*)/')
  if not app or redis.call('EXISTS', prefix .. ':app:' .. app .. ':webhooks') == 0 then
    return
  end
  local seq_key = prefix .. ':events:seq:' .. name
  local seq = redis.call('INCR', seq_key)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('PEXPIRE', seq_key, ttl)
  else
    redis.call('PERSIST', seq_key)
  end
  local flat = redis.call('HGETALL', KEYS[1])
  local parts = {}
  for i = 1, #flat, 2 do
    parts[#parts + 1] = cjson.encode(flat[i]) .. ':' .. flat[i + 1]
  end
  local t = redis.call('TIME')
  local at = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
  local id = 'evt_' .. string.sub(redis.sha1hex(name .. '|' .. seq .. '|' .. at), 1, 24)
  redis.call('RPUSH', prefix .. ':outbox:' .. name, '{"id":"' .. id .. '","type":' .. cjson.encode(kind) ..
    ',"sequence":' .. seq .. ',"at":' .. at .. ',"data":' .. (data_json or 'null') ..
    ',"record":{' .. table.concat(parts, ',') .. '}}')
  redis.call('SADD', prefix .. ':outbox', name)
  redis.call('RPUSH', prefix .. ':outbox:notify', name)
  redis.call('LTRIM', prefix .. ':outbox:notify', -1000, -1)
end

local function emit(kind, data_json)
  emit_for(ARGV[1], ARGV[2], kind, data_json)
end

-- A task.status_changed event when the task's state or status differs from before (JSON texts).
local function emit_status_change(old_state, old_status)
  local f = redis.call('HMGET', KEYS[1], 'state', 'status')
  if f[1] ~= old_state or f[2] ~= old_status then
    emit('task.status_changed', '{"previous_state":' .. (old_state or 'null') .. ',"previous_status":' ..
      (old_status or 'null') .. '}')
  end
end

-- KEYS[1] record, KEYS[2] app index, KEYS[3] active set; ARGV[1] prefix, ARGV[2] name, ARGV[3] task id.
-- Each lease of keys that names the task is deleted, and gets its own cooldown unless another task holds it.
local function end_task(keys, status, reason_json, cooldown_ms, ttl_ms, now_text, now_ms)
  local rec, name = KEYS[1], ARGV[2]
  redis.call('HSET', rec, 'state', '"ended"', 'status', status, 'reason', reason_json,
    'ended_at', now_text, 'updated_at', now_text)
  release_leases(keys, name, cooldown_ms)
  redis.call('SREM', KEYS[3], name)
  release_load(rec, name)
  redis.call('PEXPIRE', rec, ttl_ms)
  redis.call('ZADD', KEYS[2], now_ms + ttl_ms, ARGV[3])
  if redis.call('ZCOUNT', KEYS[2], '+inf', '+inf') == 0 then
    redis.call('PEXPIRE', KEYS[2], ttl_ms)
  end
  emit('task.ended', nil)
end

local function url_taken_reason(holder)
  return cjson.encode('stopped: its StreamURL was taken by task ' .. holder .. ' while it had no live worker')
end
