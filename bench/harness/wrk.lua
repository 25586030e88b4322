-- wrk script of the linkpop benchmark, the same for every system.
--
-- Each thread loads the request paths of BENCH_PATHS (one "/code" a line)
-- in init() and pre-formats every request, so the per-request Lua cost is
-- one table index and is the same for every server. Thread i starts at
-- BENCH_OFFSET + i * lines / BENCH_THREADS and walks the file in a loop.
-- done() writes the summary and latency percentiles as JSON to BENCH_OUT.

local tid = 0
local started = 0

function setup(thread)
   thread:set("tid", started)
   started = started + 1
end

local reqs = {}
local n = 0
local pos = 0

function init(args)
   for line in io.lines(os.getenv("BENCH_PATHS")) do
      n = n + 1
      reqs[n] = wrk.format("GET", line)
   end
   local threads = tonumber(os.getenv("BENCH_THREADS") or "1")
   local offset = tonumber(os.getenv("BENCH_OFFSET") or "0")
   pos = (offset + tid * math.floor(n / threads)) % n
end

function request()
   pos = pos + 1
   if pos > n then
      pos = 1
   end
   return reqs[pos]
end

function done(summary, latency, requests)
   local e = summary.errors
   local f = assert(io.open(os.getenv("BENCH_OUT"), "w"))
   f:write(string.format(
      '{"duration_us":%d,"requests":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
   f:close()
end
