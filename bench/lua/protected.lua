-- GET a path with a session cookie, rotating over the tokens in a file (one per line).
-- wrk ... -s protected.lua URL -- TOKEN_FILE
-- Used for the bare "hello" app too, so the generator does the same work in both.
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
end

function request()
  index = index % #tokens + 1
  return wrk.format("GET", path, { ["Cookie"] = "session=" .. tokens[index] })
end
