/**
 * A switch read from the environment: 1/true/yes/on or 0/false/no/off, in any
 * case. Unset or empty is undefined (as if not given); anything else is null,
 * which the caller refuses.
 */
export function envSwitch(value: string | undefined): boolean | null | undefined {
  if (value === undefined || value === '') return undefined;
  if (/^(?:1|true|yes|on)$/i.test(value)) return true;
  if (/^(?:0|false|no|off)$/i.test(value)) return false;
  return null;
}
