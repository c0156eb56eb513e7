import { describe, expect, it } from 'vitest';
import { FleetClient } from '../../src/agent/client.ts';
import type { FleetFile } from '../../src/agent/fleet-file.ts';
import { FleetpatchError } from '../../src/errors.ts';

const XEN = 'aa'.repeat(20);
const fleetFile: FleetFile = {
  url: 'http://127.0.0.1:9400',
  adminToken: 'a'.repeat(32),
  createdAt: '2026-01-01T00:00:00.000Z',
  seed: 1,
  images: [{ name: 'xen', buildId: XEN }],
  hosts: [
    { id: 'host-0001', token: 't'.repeat(32), labels: { region: 'eu', rack: 'r1' }, buildId: XEN, image: 'xen' },
    { id: 'host-0002', token: 'u'.repeat(32), labels: { region: 'eu', rack: 'r2' }, buildId: XEN, image: 'xen' },
  ],
};

describe('the inventory of FleetClient', () => {
  it('counts a host in both the fleet file and the event store once, the enrolled record winning', () => {
    const client = new FleetClient(fleetFile, {
      enrolled: [
        { id: 'host-0002', labels: { region: 'us', rack: 'r9' }, hypervisorBuildId: XEN, address: 'http://127.0.0.1:9400' },
        { id: 'dom0-a', labels: { region: 'eu' }, hypervisorBuildId: XEN, address: 'https://10.0.0.5:9443' },
      ],
      workerTls: { key: 'k', cert: 'c', ca: 'a', dir: '/x' },
    });
    expect(client.hostIds).toEqual(['host-0001', 'host-0002', 'dom0-a']);
    expect(client.hosts.find((h) => h.id === 'host-0002')).toEqual({ id: 'host-0002', labels: { region: 'us', rack: 'r9' }, buildId: XEN, url: 'http://127.0.0.1:9400', source: 'enrolled' });
    // An emulated host enrolled as a record is still reached at the fleet server with its token.
    expect(client.host('host-0002').toJSON()).toEqual({ url: 'http://127.0.0.1:9400', hostId: 'host-0002' });
    expect(client.host('dom0-a').toJSON()).toEqual({ url: 'https://10.0.0.5:9443', hostId: 'dom0-a' });
    expect(() => client.host('nope')).toThrow(FleetpatchError);
  });

  it('needs the worker certificate only for hosts behind an agent, and says so naming the host', () => {
    const missing = new FleetpatchError('CERTIFICATE_INVALID', 'no key.pem in /x');
    const client = new FleetClient(null, { enrolled: [{ id: 'dom0-a', labels: {}, hypervisorBuildId: XEN, address: 'https://10.0.0.5:9443' }], workerTls: missing });
    expect(() => client.host('dom0-a')).toThrow('no key.pem in /x');
    expect(() => new FleetClient(null, { enrolled: [{ id: 'dom0-a', labels: {}, hypervisorBuildId: XEN, address: 'https://10.0.0.5:9443' }] }).host('dom0-a')).toThrow(/no worker certificate/);
    expect(() => client.fleet).toThrow(/enrolled hosts only/);
    // An enrolled http address that is not the emulator's is not reached in the clear.
    expect(() => new FleetClient(fleetFile, { enrolled: [{ id: 'x', labels: {}, hypervisorBuildId: XEN, address: 'http://10.9.9.9:80' }] }).host('x')).toThrow(/neither https/);
  });
});
