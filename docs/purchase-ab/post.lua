local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/purchase/" .. ((n % 7) + 1))
end
