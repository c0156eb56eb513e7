/**
 * The composition root of a command: validated configuration, the logger, the services (started
 * locally when the environment names none; the database migrated before anyone uses it) and an
 * orderly shutdown. Commands call `withServices` and get everything cleaned up however they end.
 */
import { migrate } from '../events/migrate.ts';
import { redactUrl } from '../runtime/database.ts';
import { loadConfig, type Config } from '../runtime/config.ts';
import { createCommandLogger, type Logger } from '../runtime/logger.ts';
import { startServices, type ServiceNeeds, type Services } from '../runtime/services.ts';
import { Shutdown } from '../runtime/shutdown.ts';

export interface CommandContext {
  config: Config;
  logger: Logger;
  services: Services;
  shutdown: Shutdown;
}

/** `env` overrides: settings a command line option stands for (validated like the environment). */
export async function withServices<T>(needs: ServiceNeeds, fn: (ctx: CommandContext) => Promise<T>, env: Record<string, string> = {}): Promise<T> {
  const config = loadConfig({ ...process.env, ...env });
  const logger = createCommandLogger(config.logLevel, config.dataDir);
  const shutdown = new Shutdown(logger);
  shutdown.installSignalHandlers();
  try {
    const services = await startServices(config, logger, shutdown, {
      ...needs,
      prepareDatabase: async (pool, url) => {
        const applied = await migrate(pool);
        if (applied.length > 0) logger.info({ applied, database: redactUrl(url) }, 'database migrations applied');
      },
    });
    return await fn({ config, logger, services, shutdown });
  } finally {
    await shutdown.run();
    logger.flush?.();
  }
}
