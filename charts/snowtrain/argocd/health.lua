-- Argo CD health check for snowtrain.io FineTuneJob, PretrainJob, BatchPrediction and
-- TrainingSchedule (one script for all four).
--
-- Install it in argocd-cm (see charts/snowtrain/README.md):
--   resource.customizations.health.snowtrain.io_FineTuneJob: |      <this file>
--   resource.customizations.health.snowtrain.io_PretrainJob: |      <this file>
--   resource.customizations.health.snowtrain.io_BatchPrediction: |  <this file>
--   resource.customizations.health.snowtrain.io_TrainingSchedule: | <this file>
--
-- Mapping (kstatus-compatible, the operator's status is the only input):
--   no status yet / status for an older generation -> Progressing
--   Suspended (phase or condition)                  -> Suspended
--   Failed (phase or condition)                     -> Degraded, with the classified reason
--   Ready=True (trained, and served when asked)     -> Healthy
--   Succeeded but serving not ready yet             -> Progressing
--   Pending / Waiting / Queued / Running            -> Progressing, with progress and loss
--                                                      (a BatchPrediction: rows done)
--   a TrainingSchedule not Ready (no model in service yet, a rollout)
--                                                   -> Progressing, with the Ready message

local hs = {}

local function condition(status, ctype)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function is_true(status, ctype)
  local c = condition(status, ctype)
  return c ~= nil and c.status == "True"
end

local function progress_text(status)
  local parts = {}
  local p = status.progress
  if p ~= nil then
    if p.percent ~= nil then
      table.insert(parts, string.format("%.0f%%", p.percent))
    end
    if p.step ~= nil and p.totalSteps ~= nil then
      table.insert(parts, string.format("step %d/%d", p.step, p.totalSteps))
    end
  end
  local r = status.rows
  if r ~= nil and r.done ~= nil then
    if r.total ~= nil then
      table.insert(parts, string.format("%d/%d rows", r.done, r.total))
    else
      table.insert(parts, string.format("%d rows", r.done))
    end
  end
  local m = status.metrics
  if m ~= nil and m.trainLoss ~= nil then
    table.insert(parts, string.format("loss %.4g", m.trainLoss))
  end
  return table.concat(parts, ", ")
end

local function with_detail(prefix, detail)
  if detail == nil or detail == "" then
    return prefix
  end
  return prefix .. ": " .. detail
end

local status = obj.status
if status == nil or (status.phase == nil and status.conditions == nil) then
  hs.status = "Progressing"
  hs.message = "Waiting for the snowtrain operator to report status"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase or ""

if phase == "Suspended" or is_true(status, "Suspended") then
  hs.status = "Suspended"
  local c = condition(status, "Suspended")
  hs.message = with_detail("Suspended", c and c.message)
  return hs
end

if phase == "Failed" or is_true(status, "Failed") then
  hs.status = "Degraded"
  local f = status.failure or {}
  local c = condition(status, "Failed") or {}
  local reason = f.reason or c.reason or "Failed"
  hs.message = with_detail(reason, f.message or c.message)
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = with_detail("Ready", ready.message)
  return hs
end

if obj.kind == "TrainingSchedule" then
  hs.status = "Progressing"
  hs.message = with_detail("Active", ready and ready.message)
  return hs
end

if phase == "Succeeded" or is_true(status, "Succeeded") then
  local serving_asked = obj.spec ~= nil and obj.spec.serving ~= nil
  if not serving_asked and ready == nil then
    -- An operator that does not set Ready: training success is the goal.
    hs.status = "Healthy"
    hs.message = "Training succeeded"
    return hs
  end
  local sr = condition(status, "ServingReady")
  if sr ~= nil and sr.reason == "ServerFailing" then
    -- The model server exits (a model that will not load): waiting will not fix it.
    hs.status = "Degraded"
    hs.message = with_detail("Training succeeded; the model server is failing", sr.message)
    return hs
  end
  hs.status = "Progressing"
  hs.message = with_detail("Training succeeded; waiting for the model server", sr and sr.message)
  return hs
end

hs.status = "Progressing"
if phase == "" then
  phase = "Pending"
end
hs.message = with_detail(phase, progress_text(status))
return hs
