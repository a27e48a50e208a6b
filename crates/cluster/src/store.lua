-- The switchboard cluster store: one script, run atomically by Redis, that
-- carries out a batch of store ops in order and returns one reply each.
--
-- ARGV = name1, n1, arg..., name2, n2, arg..., ...
--
-- Keys (all under "sb:"):
--   s:SID   hash   room peer meta node epoch att seq floor cap cseq dad
--   b:SID   list   numbered frames floor+1 .. seq, oldest first
--   r:ROOM  zset   member SIDs by join order
--   p:ROOM  hash   peer id -> SID
--   due     zset   SID -> deadline (ms, Redis clock): lease or window end
--   order   counter for join order
--   buffered count of entries in all b:SID lists (a metric)
-- Numbered frames go to the owning node on channel "sb:n:NODE" as
-- "D SID SEQ FRAME"; "E SID EPOCH" tells a node to close a socket that lost
-- its session.
--
-- Time is Redis's own (TIME), so nodes with skewed clocks agree on windows.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local P = 'sb:'
local function sk(sid) return P .. 's:' .. sid end
local function bk(sid) return P .. 'b:' .. sid end
local function rk(room) return P .. 'r:' .. room end
local function pk(room) return P .. 'p:' .. room end

-- Numbers FRAME ('{"type":...}') into SID's buffer; delivers if attached.
local function append(sid, frame)
  local k = sk(sid)
  local h = redis.call('HMGET', k, 'seq', 'floor', 'cap', 'att', 'node', 'dad')
  if not h[1] then return end
  local seq = tonumber(h[1]) + 1
  redis.call('HSET', k, 'seq', seq)
  local numbered = '{"seq":' .. seq .. ',' .. string.sub(frame, 2)
  local len = redis.call('RPUSH', bk(sid), numbered)
  redis.call('INCR', P .. 'buffered')
  if len > tonumber(h[3]) then
    redis.call('LPOP', bk(sid))
    redis.call('DECR', P .. 'buffered')
    local floor = tonumber(h[2]) + 1
    redis.call('HSET', k, 'floor', floor)
    -- Detached and now missing a message it never got: due at once.
    if h[4] == '0' and floor > tonumber(h[6]) then
      redis.call('ZADD', P .. 'due', 0, sid)
    end
  end
  if h[4] == '1' then
    redis.call('PUBLISH', P .. 'n:' .. h[5], 'D ' .. sid .. ' ' .. seq .. ' ' .. numbered)
  end
end

-- Forgets SID; the node holding its socket is told.
local function remove(sid)
  local k = sk(sid)
  local h = redis.call('HMGET', k, 'room', 'peer', 'att', 'node', 'epoch')
  if not h[1] then return end
  if h[3] == '1' then
    redis.call('PUBLISH', P .. 'n:' .. h[4], 'E ' .. sid .. ' ' .. h[5])
  end
  redis.call('DECRBY', P .. 'buffered', redis.call('LLEN', bk(sid)))
  redis.call('DEL', k, bk(sid))
  redis.call('ZREM', P .. 'due', sid)
  redis.call('ZREM', rk(h[1]), sid)
  if redis.call('HGET', pk(h[1]), h[2]) == sid then
    redis.call('HDEL', pk(h[1]), h[2])
  end
end

-- peer, meta, peer, meta, ... of ROOM's members but EXCEPT, oldest first.
local function members(room, except)
  local out = {}
  for _, m in ipairs(redis.call('ZRANGE', rk(room), 0, -1)) do
    if m ~= except then
      local h = redis.call('HMGET', sk(m), 'peer', 'meta')
      if h[1] then
        table.insert(out, h[1])
        table.insert(out, h[2])
      end
    end
  end
  return out
end

local ops = {}

-- sid room peer meta node max takeover joined lease cap
ops.join = function(a)
  local sid, room, peer = a[1], a[2], a[3]
  local holder = redis.call('HGET', pk(room), peer)
  local replaced = false
  if holder then
    if holder == a[7] then replaced = true else return {'taken'} end
  end
  local n = redis.call('HLEN', pk(room))
  if replaced then n = n - 1 end
  if n >= tonumber(a[6]) then return {'full'} end
  if replaced then remove(holder) end
  local others = redis.call('ZRANGE', rk(room), 0, -1)
  local peers = members(room, sid)
  redis.call('ZADD', rk(room), redis.call('INCR', P .. 'order'), sid)
  redis.call('HSET', pk(room), peer, sid)
  redis.call('HSET', sk(sid), 'room', room, 'peer', peer, 'meta', a[4], 'node', a[5],
    'epoch', 1, 'att', 1, 'seq', 0, 'floor', 0, 'cap', a[10], 'cseq', 0, 'dad', 0)
  redis.call('ZADD', P .. 'due', now + tonumber(a[9]), sid)
  for _, o in ipairs(others) do append(o, a[8]) end
  return {'joined', 1, peers}
end

-- sid epoch cseq('' for none) to frame
ops.relay = function(a)
  local k = sk(a[1])
  local h = redis.call('HMGET', k, 'epoch', 'room', 'cseq')
  if not h[1] or h[1] ~= a[2] then return {'stale'} end
  if a[3] ~= '' then
    if tonumber(a[3]) <= tonumber(h[3]) then return {'dup'} end
    redis.call('HSET', k, 'cseq', a[3])
  end
  local target = redis.call('HGET', pk(h[2]), a[4])
  if not target then return {'unknown'} end
  append(target, a[5])
  return {'relayed'}
end

-- sid epoch seq
ops.ack = function(a)
  local k = sk(a[1])
  local h = redis.call('HMGET', k, 'epoch', 'seq', 'floor')
  if not h[1] or h[1] ~= a[2] then return {'done'} end
  local seq = math.min(tonumber(a[3]), tonumber(h[2]))
  local n = seq - tonumber(h[3])
  if n > 0 then
    local before = redis.call('LLEN', bk(a[1]))
    redis.call('LTRIM', bk(a[1]), n, -1)
    redis.call('DECRBY', P .. 'buffered', before - redis.call('LLEN', bk(a[1])))
    redis.call('HSET', k, 'floor', seq)
  end
  return {'done'}
end

-- sid room peer last_seen node lease
ops.resume = function(a)
  local sid = a[1]
  local k = sk(sid)
  local h = redis.call('HMGET', k, 'room', 'peer', 'epoch', 'att', 'seq', 'floor', 'cseq', 'node')
  if not h[1] or h[1] ~= a[2] or h[2] ~= a[3] then return {'unknown'} end
  local last = tonumber(a[4])
  if last > tonumber(h[5]) then return {'ahead'} end
  local floor = tonumber(h[6])
  if last < floor then return {'overflowed'} end
  local due = redis.call('ZSCORE', P .. 'due', sid)
  if not due or tonumber(due) <= now then return {'expired'} end
  if h[4] == '1' then
    redis.call('PUBLISH', P .. 'n:' .. h[8], 'E ' .. sid .. ' ' .. h[3])
  end
  local epoch = tonumber(h[3]) + 1
  redis.call('HSET', k, 'epoch', epoch, 'att', 1, 'node', a[5])
  redis.call('ZADD', P .. 'due', now + tonumber(a[6]), sid)
  if last > floor then
    local before = redis.call('LLEN', bk(sid))
    redis.call('LTRIM', bk(sid), last - floor, -1)
    redis.call('DECRBY', P .. 'buffered', before - redis.call('LLEN', bk(sid)))
    redis.call('HSET', k, 'floor', last)
    floor = last
  end
  return {'resumed', epoch, tonumber(h[7]), floor, redis.call('LRANGE', bk(sid), 0, -1),
    members(h[1], sid)}
end

-- sid epoch delivered window
ops.detach = function(a)
  local k = sk(a[1])
  local h = redis.call('HMGET', k, 'epoch', 'floor')
  if not h[1] or h[1] ~= a[2] then return {'done'} end
  redis.call('HSET', k, 'att', 0, 'dad', a[3])
  local deadline = now + tonumber(a[4])
  if tonumber(h[2]) > tonumber(a[3]) then deadline = 0 end
  redis.call('ZADD', P .. 'due', deadline, a[1])
  return {'done'}
end

-- sid epoch('' when expiring) left
ops['end'] = function(a)
  local h = redis.call('HMGET', sk(a[1]), 'epoch', 'room')
  if not h[1] then return {'stale'} end
  if a[2] ~= '' then
    if h[1] ~= a[2] then return {'stale'} end
  else
    local due = redis.call('ZSCORE', P .. 'due', a[1])
    if due and tonumber(due) > now then return {'stale'} end
  end
  remove(a[1])
  for _, o in ipairs(redis.call('ZRANGE', rk(h[2]), 0, -1)) do append(o, a[3]) end
  return {'done'}
end

-- limit
ops.sweep = function(a)
  local out = {}
  for _, sid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'due', '-inf', now, 'LIMIT', 0, tonumber(a[1]))) do
    local h = redis.call('HMGET', sk(sid), 'room', 'peer')
    if h[1] then
      table.insert(out, sid)
      table.insert(out, h[1])
      table.insert(out, h[2])
    else
      redis.call('ZREM', P .. 'due', sid)
    end
  end
  return {'due', out}
end

-- lease sid epoch sid epoch ...
ops.refresh = function(a)
  local lease = tonumber(a[1])
  for i = 2, #a, 2 do
    local h = redis.call('HMGET', sk(a[i]), 'epoch', 'att')
    if h[1] == a[i + 1] and h[2] == '1' then
      redis.call('ZADD', P .. 'due', 'XX', now + lease, a[i])
    end
  end
  return {'done'}
end

-- sid after
ops.fetch = function(a)
  local floor = redis.call('HGET', sk(a[1]), 'floor')
  if not floor then return {'stale'} end
  floor = tonumber(floor)
  local from = math.max(tonumber(a[2]) - floor, 0)
  return {'fetched', floor + from, redis.call('LRANGE', bk(a[1]), from, -1)}
end

local out = {}
local i = 1
while i <= #ARGV do
  local name, n = ARGV[i], tonumber(ARGV[i + 1])
  local a = {}
  for j = 1, n do a[j] = ARGV[i + 1 + j] end
  i = i + 2 + n
  table.insert(out, ops[name](a))
end
return out
