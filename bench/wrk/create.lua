-- POST one new record per request. Every request carries a unique external id
-- (<prefix>-<thread>-<counter>) so each one is a real create, never an idempotent no-op.
-- Args (after "--"): <path> <id prefix> <body style: rekor|pocketbase>
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "common.lua")

local path, prefix, style
local counter = 0
local severities = { "p0", "p1", "p2", "p3" }
local statuses = { "open", "investigating", "resolved" }

function init(args)
  path = args[1]
  prefix = args[2]
  style = args[3] or "rekor"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  sent = sent + 1
  counter = counter + 1
  local ext = string.format("%s-%d-%d", prefix, tid, counter)
  local sev = severities[(counter % 4) + 1]
  local st = statuses[(counter % 3) + 1]
  local title = "API latency spike in us-east-1 #" .. counter
  local body
  if style == "pocketbase" then
    body = string.format(
      '{"external_id":"%s","external_source":"bench","title":"%s","severity":"%s",'
        .. '"status":"%s","assignee":"oncall@team.dev"}',
      ext, title, sev, st)
  else
    body = string.format(
      '{"external_id":"%s","external_source":"bench","data":{"title":"%s","severity":"%s",'
        .. '"status":"%s","assignee":"oncall@team.dev"}}',
      ext, title, sev, st)
  end
  return wrk.format(nil, path, nil, body)
end
