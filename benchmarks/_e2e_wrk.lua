-- wrk script of the end-to-end benchmark (e2e.py):
--   wrk ... -s _e2e_wrk.lua URL -- METHOD COOKIE1 COOKIE2 ...
-- wrk's Lua has no connection id, so requests take the cookies in turn: with as many
-- cookies as connections, each session has about one request in flight at a time.
local method = "GET"
local cookies = {}
local turn = 0

function init(args)
  method = args[1]
  for i = 2, #args do
    cookies[#cookies + 1] = args[i]
  end
end

function request()
  turn = turn % #cookies + 1
  local headers = { Cookie = cookies[turn] }
  if method == "POST" then
    headers["Content-Length"] = "0"
  end
  return wrk.format(method, nil, headers, nil)
end

-- One line of JSON for the harness: counts, errors and latency percentiles (microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'E2E-RESULT {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, '
      .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
