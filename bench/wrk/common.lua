-- Shared wrk hooks: per-thread status counting and a machine-readable summary.
-- The harness parses the line starting with "WRK_JSON " that done() prints.

local threads = {}
local thread_counter = 0

function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("tid", thread_counter)
  table.insert(threads, thread)
end

-- Counts by status code, per thread (each wrk thread has its own Lua state).
status_counts = {}
-- Requests generated. When the duration ends wrk stops without waiting for the requests in
-- flight, so the server may have handled up to `connections` more than wrk counted.
sent = 0

function response(status, headers, body)
  status_counts[status] = (status_counts[status] or 0) + 1
end

local function json_number(x)
  if x ~= x or x == math.huge or x == -math.huge then
    return "null"
  end
  return string.format("%.3f", x)
end

function done(summary, latency, requests)
  local merged = {}
  local total_sent = 0
  for _, t in ipairs(threads) do
    total_sent = total_sent + (t:get("sent") or 0)
    local counts = t:get("status_counts")
    if counts then
      for code, n in pairs(counts) do
        merged[code] = (merged[code] or 0) + n
      end
    end
  end
  local parts = {}
  for code, n in pairs(merged) do
    table.insert(parts, string.format('"%d": %d', code, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "sent": %d, "duration_us": %d, "bytes": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"min": %s, "mean": %s, "p50": %s, "p90": %s, "p99": %s, '
      .. '"p999": %s, "max": %s}, "status": {%s}}\n',
    summary.requests, total_sent, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    json_number(latency.min), json_number(latency.mean),
    json_number(latency:percentile(50)), json_number(latency:percentile(90)),
    json_number(latency:percentile(99)), json_number(latency:percentile(99.9)),
    json_number(latency.max),
    table.concat(parts, ", ")
  ))
end
