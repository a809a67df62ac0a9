-- Like protected.lua, but each connection pauses DELAY_MS between requests: a person browsing,
-- not a flood (wrk has no rate option; delay() paces it).
-- wrk ... -s browse.lua URL -- TOKEN_FILE DELAY_MS
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  tokens = {}
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  index = (tid * 7919) % #tokens
  path = wrk.path
  pause = tonumber(args[2])
end

function request()
  index = index % #tokens + 1
  return wrk.format("GET", path, { ["Cookie"] = "session=" .. tokens[index] })
end

function delay()
  return pause
end
