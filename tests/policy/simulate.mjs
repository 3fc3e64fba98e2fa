// Evaluates a batch of IAM requests offline with @cloud-copilot/iam-simulate.
// stdin: {"requests": [{id, principal, action, resource, accountId, context, policies: [{name, policy}], resourcePolicy?}]}
// stdout: {"results": [{id, decision, ignoredContextKeys, allowedBy, deniedBy, errors}]}
// One process for the whole batch keeps the suite fast; a malformed request is reported, not thrown.
import { runSimulation } from '@cloud-copilot/iam-simulate'

async function readStdin() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return JSON.parse(Buffer.concat(chunks).toString('utf8'))
}

function sids(statements) {
  return (statements || []).map((s) => s.explain?.identifier ?? s.statement?.sid?.() ?? '?')
}

async function evaluate(request) {
  const simulation = {
    request: {
      principal: request.principal,
      action: request.action,
      resource: { resource: request.resource, accountId: request.accountId },
      contextVariables: request.context || {}
    },
    identityPolicies: request.policies,
    // A resource's own policy where AWS reads one too (a KMS key's: without it, no grant counts).
    ...(request.resourcePolicy ? { resourcePolicy: request.resourcePolicy } : {}),
    serviceControlPolicies: [],
    resourceControlPolicies: []
  }
  const response = await runSimulation(simulation, { simulationMode: 'Strict' })
  if (response.resultType === 'error') {
    return { id: request.id, decision: 'Error', errors: response.errors }
  }
  if (response.resultType !== 'single') {
    return { id: request.id, decision: 'Error', errors: { message: `expected one resource, got ${response.resultType}` } }
  }
  const { analysis, ignoredContextKeys } = response.result
  const identity = analysis?.identityAnalysis || {}
  return {
    id: request.id,
    decision: response.overallResult,
    ignoredContextKeys: ignoredContextKeys || [],
    allowedBy: sids(identity.allowStatements),
    deniedBy: sids(identity.denyStatements)
  }
}

const batch = await readStdin()
const results = []
for (const request of batch.requests) {
  try {
    results.push(await evaluate(request))
  } catch (error) {
    results.push({ id: request.id, decision: 'Error', errors: { message: String(error?.stack || error) } })
  }
}
process.stdout.write(JSON.stringify({ results }))
