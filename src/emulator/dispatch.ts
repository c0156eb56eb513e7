/**
 * One host agent request run against one host: the state machine's operation, the host after it,
 * and the answer in the agent contract's shapes. Pure: the clock, the upload checker and the fault
 * layer's action effects come in as arguments, so the same request on the same host gives the
 * same answer. The server (server.ts) stores the host, journals the change and sends the answer.
 */
import type { WireAction, WireReboot, WireUpload } from '../agent/contract.ts';
import { callFunction, functionTable } from './functions.ts';
import type { HostRequest } from '../agent/requests.ts';
import * as sm from './state-machine.ts';
import { callView, listView, payloadView, statusView } from './views.ts';

export interface DispatchContext {
  /** The emulator's clock, milliseconds. */
  readonly now: number;
  readonly check: sm.UploadChecker;
  /** The fault layer's decision for an action that schedules work. */
  readonly effects: NonNullable<sm.ActionContext['effects']>;
  /** Wall time minus the clock: LIST reports boot times as dates. */
  readonly wallOffsetMs: number;
}

/** The host after the request, and either the answer (JSON or text with its status) or Xen's refusal. */
export interface Reply {
  readonly host: sm.Host;
  /** The dependency check the hypervisor made, passed or not (journalled). */
  readonly check?: sm.DependencyCheck;
  readonly answer?: { readonly status: number; readonly json?: unknown; readonly text?: string };
  readonly refusal?: Error;
}

function reply<T>(o: sm.Outcome<T>, status: number, view: (v: T, host: sm.Host) => unknown): Reply {
  const check = o.ok ? (o.value as { dependencyCheck?: sm.DependencyCheck | null }).dependencyCheck : (o.error.details.dependencyCheck as sm.DependencyCheck | undefined);
  const base = { host: o.host, ...(check ? { check } : {}) };
  return o.ok ? { ...base, answer: { status, json: view(o.value, o.host) } } : { ...base, refusal: o.error };
}

export function dispatch(hostId: string, host: sm.Host, req: HostRequest, ctx: DispatchContext): Reply {
  const { now } = ctx;
  switch (req.kind) {
    case 'list':
      return reply(sm.list(host, { idx: req.idx, nr: req.nr }, now), 200, (page, after) => listView(after, page, req.idx, ctx.wallOffsetMs));
    case 'get':
      return reply(sm.getStatus(host, req.name, now), 200, statusView);
    case 'upload':
      return reply(sm.upload(host, { name: req.name, bytes: req.bytes }, { now, check: ctx.check }), 201, (v): WireUpload => ({ ...payloadView(v.payload), dependencyCheck: v.dependencyCheck }));
    case 'action': {
      const o = sm.action(host, { name: req.name, cmd: req.cmd, timeoutNs: req.timeoutNs, nodeps: req.nodeps }, { now, effects: ctx.effects });
      return reply(o, o.ok && o.value.scheduled ? 202 : 200, (v): WireAction => ({ rc: 0, scheduled: v.scheduled, dependencyCheck: v.dependencyCheck }));
    }
    case 'functions':
      return { host, answer: { status: 200, json: { host: hostId, functions: functionTable(host, now).map(callView) } } };
    case 'call':
      return reply(callFunction(host, req.fn, now), 200, callView);
    case 'dump':
      return { host, answer: { status: 200, text: sm.dump(host, now) } };
    case 'reboot': {
      const after = sm.reboot(host, { now, downMs: req.downMs });
      const body: WireReboot = { rebooted: true, boots: after.boots };
      return { host: after, answer: { status: 200, json: body } };
    }
  }
}
