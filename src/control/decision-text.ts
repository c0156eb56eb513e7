/**
 * Who asks and why, checked before anything is started or steered: every front end (the CLI, the
 * API, a script calling src/control) goes through here, so text the store could not record never
 * reaches a workflow, where it would fail the recording far from the person who sent it.
 */
import { FleetpatchError } from '../errors.ts';
import { ActorSchema, type Actor } from '../domain/actor.ts';
import { unstorable } from '../domain/text.ts';

/** The longest reason recorded (the API's and the CLI's bound). */
export const MAX_REASON_LENGTH = 1000;

export function requireRecordable(what: string, by: Actor, reason: string | undefined, opts: { reasonRequired?: boolean } = {}): void {
  const actor = ActorSchema.safeParse(by);
  if (!actor.success) {
    const issue = actor.error.issues[0]!;
    throw new FleetpatchError('ARGUMENT', `${what}: requestedBy.${issue.path.join('.') || 'id'} ${issue.message}`, { field: `requestedBy.${issue.path.join('.')}` });
  }
  if (reason === undefined) {
    if (opts.reasonRequired) throw new FleetpatchError('ARGUMENT', `${what}: say why: a reason is required and is recorded`, { field: 'reason' });
    return;
  }
  const problem = unstorable(reason);
  if (problem) throw new FleetpatchError('ARGUMENT', `${what}: reason ${problem}`, { field: 'reason' });
  if (opts.reasonRequired && !reason.trim()) throw new FleetpatchError('ARGUMENT', `${what}: say why: a reason is required and is recorded`, { field: 'reason' });
  if (reason.length > MAX_REASON_LENGTH) throw new FleetpatchError('ARGUMENT', `${what}: reason is ${reason.length} characters long; at most ${MAX_REASON_LENGTH} are recorded`, { field: 'reason' });
}
