-- POST /api/login with JSON, rotating over prepared users bench-N@example.com.
-- wrk ... -s login.lua URL -- USER_COUNT PASSWORD
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  users = tonumber(args[1])
  password = args[2]
  index = (tid * 104729) % users
end

function request()
  index = index % users + 1
  local body = '{"email":"bench-' .. index .. '@example.com","password":"' .. password .. '"}'
  return wrk.format("POST", "/api/login", { ["Content-Type"] = "application/json" }, body)
end
