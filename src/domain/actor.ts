/**
 * Who did something: a person (by name, or an API token's name), a workflow, or fleetpatch itself.
 * Every decision and every fact carries one. Pure (zod only): workflow code imports the type.
 */
import { z } from 'zod';
import { StorableString } from './text.ts';

export const ActorSchema = z.object({ kind: z.enum(['user', 'workflow', 'system']), id: StorableString.min(1).max(200) });
export type Actor = z.infer<typeof ActorSchema>;

/** fleetpatch itself, deciding on its own (an exceeded budget, an automatic rollback). */
export const SYSTEM_ACTOR: Actor = { kind: 'system', id: 'fleetpatch' };
