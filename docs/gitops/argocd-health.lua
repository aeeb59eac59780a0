-- Argo CD health of an UpgradePlan (resource.customizations.health.upgrade.uwm.io_UpgradePlan).
-- Healthy once Succeeded; Degraded when over short of its target (Failed, RolledBack) or Stalled;
-- Suspended while it waits on people or the clock (Paused, AwaitingApproval, AwaitingWindow);
-- Progressing otherwise, and while the operator has not seen the latest spec.
local hs = {status = "Progressing", message = "Waiting for the operator to write the plan's status"}
if obj.status == nil then
  return hs
end
local function condition(kind)
  if obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == kind then
        return c
      end
    end
  end
  return nil
end
local phase = obj.status.phase or "Pending"
local message = obj.status.message or phase
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.message = "Waiting for the operator to see generation " .. tostring(obj.metadata.generation)
  return hs
end
local stalled = condition("Stalled")
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "RolledBack" or (stalled ~= nil and stalled.status == "True") then
  hs.status = "Degraded"
  if stalled ~= nil and stalled.status == "True" and stalled.message ~= nil and stalled.message ~= "" then
    message = stalled.reason .. ": " .. stalled.message
  end
elseif phase == "Paused" or phase == "AwaitingApproval" or phase == "AwaitingWindow" then
  hs.status = "Suspended"
end
hs.message = phase .. ": " .. message
return hs
