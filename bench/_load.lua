-- wrk script: POST a binary-mode CloudEvent with a unique id per request (so every request is a new
-- event, not a duplicate), then print one machine-readable RESULT line.
local counter = 0
local threads = 0
local body = '{"repository": {"name": "models/llama"}, "tag": "v1.2.3", "digest": "sha256:0123456789abcdef"}'

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  run_id = args[1] or "run"
end

function request()
  counter = counter + 1
  local headers = {
    ["ce-specversion"] = "1.0",
    ["ce-id"] = string.format("%s-%d-%d", run_id, tid, counter),
    ["ce-source"] = "/bench",
    ["ce-type"] = "com.example.bench",
    ["Content-Type"] = "application/json",
  }
  return wrk.format("POST", "/events", headers, body)
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout))
end
