-- GET one record by id per request, ids picked at random from a file (one id a line).
-- Args (after "--"): <path prefix ending in "/"> <ids file>
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "common.lua")

local prefix
local ids = {}

function init(args)
  prefix = args[1]
  for line in io.lines(args[2]) do
    if #line > 0 then
      table.insert(ids, line)
    end
  end
  if #ids == 0 then
    error("no ids in " .. args[2])
  end
  math.randomseed(os.time() + (tid or 0) * 7919)
  wrk.method = "GET"
end

function request()
  sent = sent + 1
  return wrk.format(nil, prefix .. ids[math.random(#ids)])
end
