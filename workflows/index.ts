/**
 * Every workflow fleetpatch registers. Workflow code imports only pure modules (src/rollout) and
 * activity TYPES; it runs in Temporal's deterministic sandbox.
 */
export { rolloutWorkflow } from './rollout.ts';
export { rollbackWorkflow } from './rollback.ts';
export { webhookDeliveryWorkflow } from './webhooks.ts';
export { repairWorkflow } from './repair.ts';
