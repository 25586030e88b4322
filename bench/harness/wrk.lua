-- wrk script of the linkpop benchmark, the same for every system.
--
-- Each thread loads the request paths of BENCH_PATHS (one "/code" a line)
-- in init() and pre-formats every request, so the per-request Lua cost is
-- one table index and is the same for every server. Thread i starts at
-- BENCH_OFFSET + i * lines / BENCH_THREADS and walks the file in a loop.
-- done() writes the summary, latency percentiles and wrk's own CPU time
-- during the run as JSON to BENCH_OUT.

local tid = 0
local started = 0
local threads = {}

function setup(thread)
   thread:set("tid", started)
   started = started + 1
   table.insert(threads, thread)
end

local reqs = {}
local n = 0
local pos = 0

function init(args)
   -- What wrk.format("GET", path) returns, built by plain concatenation:
   -- wrk.format is several times slower and this runs a million times.
   local tail = " HTTP/1.1\r\nHost: " .. wrk.headers["Host"] .. "\r\n\r\n"
   for line in io.lines(os.getenv("BENCH_PATHS")) do
      n = n + 1
      reqs[n] = "GET " .. line .. tail
   end
   local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
   local offset = tonumber(os.getenv("BENCH_OFFSET") or "0")
   pos = (offset + tid * math.floor(n / nthreads)) % n
   -- Process CPU time once this thread's requests are loaded; inits run
   -- one after another before any request, so the latest is the start
   -- of the run.
   init_clock = os.clock()
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
   local start = 0
   for _, t in ipairs(threads) do
      start = math.max(start, t:get("init_clock") or 0)
   end
   local f = assert(io.open(os.getenv("BENCH_OUT"), "w"))
   f:write(string.format(
      '{"duration_us":%d,"requests":%d,"bytes":%d,"run_cpu_seconds":%.3f,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
      summary.duration, summary.requests, summary.bytes, os.clock() - start,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
   f:close()
end
