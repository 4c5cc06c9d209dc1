// Run by `npm test` first: says in one line what to do when there is no herald to test.
import { existsSync } from "node:fs";
import { heraldBin } from "./harness.js";

if (!existsSync(heraldBin())) process.exit(1); // harness.js has said why
