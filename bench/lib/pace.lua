-- wrk script: constant request rate for `bench/run fixed` (a wrk2/fortio-style paced load).
--
-- wrk calls delay() each time a connection is about to send its next request; we hand out
-- send slots from one global schedule (RATE per second over all connections, wall clock via
-- LuaJIT FFI clock_gettime(CLOCK_MONOTONIC)) and return the ms until that connection's slot.
-- wrk starts the latency clock when the request is written, after the delay, so latency is
-- service time only. Like fortio (Istio's tool) this is closed-loop per connection: if the
-- proxy stalls, sends are postponed rather than queued (no coordinated-omission correction);
-- a schedule more than 100 ms behind is reset instead of bursting to catch up.
-- Needs: wrk -t1 (one Lua state) and RATE in the environment.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } keel_bench_timespec;
int clock_gettime(int clk_id, keel_bench_timespec *tp);
]]
local ts = ffi.new("keel_bench_timespec")
local CLOCK_MONOTONIC = 1

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local interval = 1000 / tonumber(os.getenv("RATE") or "1000")
local next_slot = nil

function delay()
  local t = now_ms()
  if next_slot == nil or next_slot < t - 100 then next_slot = t end
  next_slot = next_slot + interval
  local d = next_slot - t
  if d <= 0 then return 0 end
  return math.floor(d + 0.5)
end
