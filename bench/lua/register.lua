-- POST /api/register with a unique email per request (run prefix, thread id, counter);
-- every email answered 201 is appended to OUT_PREFIX-<thread id>, so the bench can
-- compare the successes with the rows in the database; the first failures of each thread
-- go to OUT_PREFIX-failures-<thread id>.
-- wrk ... -s register.lua URL -- RUN_PREFIX OUT_PREFIX
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  prefix = args[1]
  out = assert(io.open(args[2] .. "-" .. tid, "a"))
  failures = assert(io.open(args[2] .. "-failures-" .. tid, "a"))
  sent, failed = 0, 0
end

function request()
  sent = sent + 1
  local email = "su-" .. prefix .. "-" .. tid .. "-" .. sent .. "@example.com"
  local body = '{"email":"' .. email .. '","password":"plinth-Quasar-91-meadow","name":"Bench"}'
  return wrk.format("POST", "/api/register", { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status == 201 then
    local email = string.match(body, '"email"%s*:%s*"([^"]+)"')
    out:write((email or "?") .. "\n")
    out:flush()
  elseif failed < 3 then
    failed = failed + 1
    failures:write(status .. " " .. string.sub(body, 1, 300) .. "\n")
    failures:flush()
  end
end
