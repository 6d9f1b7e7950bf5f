import type { DockerDriver } from "../../src/sandbox/docker/docker-driver";
import type { SandboxDriver } from "../../src/sandbox/driver";

/**
 * Wraps a Docker driver as the deploy pipeline uses it: prepare() once per version (function name +
 * artifact dir) before any start, then start with the image. The conformance suite builds specs without
 * an image (it is driver-neutral), so the Docker suites run it through this.
 */
export function preparing(inner: DockerDriver): SandboxDriver {
  const images = new Map<string, Promise<string>>();
  return {
    ...inner,
    start: async (spec, opts) => {
      const key = `${spec.functionName}\0${spec.artifactDir}`;
      let image = images.get(key);
      if (image === undefined) {
        image = inner.prepare(spec).then((r) => r.image);
        images.set(key, image);
      }
      return inner.start({ ...spec, image: await image }, opts);
    },
  };
}
