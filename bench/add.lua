-- wrk script: every request registers a new backend through the seed API.
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/add?no=bench-" .. n .. "-" .. math.random(1e9) .. "&ip=127.0.0.1&port=18081")
end
