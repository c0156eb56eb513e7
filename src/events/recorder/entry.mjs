// The recording thread's entry: fleetpatch runs TypeScript through tsx's loader, and a worker
// thread starts without the loaders of the thread that made it.
import { register } from 'tsx/esm/api';

register();
await import('./thread.ts');
