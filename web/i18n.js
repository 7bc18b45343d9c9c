// @ts-check
// English and German. The choice is remembered in localStorage; the first
// visit follows the browser's language. The number formats that follow it
// are in ui.js (fmtNum, fmtBytes, …).

/** @typedef {Record<string, string>} Dict */
/** @typedef {Record<string, string | number | null | undefined>} Params */

/** @type {Dict} */
const en = {
  'nav.label': 'Main', 'nav.language': 'Language', 'nav.logout': 'Log out', 'nav.login': 'Log in',
  'nav.overview': 'Overview', 'nav.services': 'Services', 'nav.healing': 'Self-healing', 'nav.updates': 'Updates', 'nav.logs': 'Logs', 'nav.settings': 'Settings',
  'common.cancel': 'Cancel', 'common.confirm': 'Confirm', 'common.loading': 'Loading…', 'common.next': 'Next', 'common.prev': 'Previous',
  'common.page': 'Page {p} of {n} ({total} in all)', 'common.unknown': 'unknown', 'common.skip': 'Skip to content',
  'unit.d': 'd', 'unit.h': 'h', 'unit.min': 'min', 'unit.s': 's',
  'err.network': 'The box cannot be reached. Check the network connection.', 'err.rate': 'Too many requests. Try again in {s} s.',
  'err.password_policy': 'The new password does not meet the rules.', 'err.wrong_current_password': 'The current password is wrong.',
  'err.too_many_attempts': 'Too many failed attempts. Wait a moment and try again.', 'err.cross_origin': 'This request came from another web page and was refused.', 'err.revocation_not_saved': 'Logged out, but the box could not save it to disk (is the disk full?).', 'err.too_many_streams': 'Too many live views are open; close one and try again.', 'err.database_unavailable': 'The database is not reachable right now.',
  'err.docker_unavailable': 'The container engine is not reachable.', 'err.llm_unavailable': 'The LLM service is not running.',
  'err.csrf_failed': 'Your session is out of date. Reload the page.',
  'login.title': 'Log in to Arasul', 'login.hint': 'Use the admin account. The first password is in /etc/arasul/secrets/initial-admin-password.',
  'login.user': 'User name', 'login.pass': 'Password', 'login.submit': 'Log in', 'login.busy': 'Checking…', 'login.empty': 'Enter the password.',
  'login.invalid': 'User name or password is wrong.', 'login.locked': 'Too many failed attempts. Locked for {s} s more.', 'login.unlocked': 'You can try again now.',
  'login.change_title': 'Choose your own password', 'login.change_why': 'This is the first login with the generated password. Choose a new one before you continue.',
  'pw.current': 'Current password', 'pw.new': 'New password', 'pw.again': 'New password again', 'pw.submit': 'Change password',
  'pw.policy': 'The new password must:', 'pw.met': 'met', 'pw.unmet': 'not met yet', 'pw.checked': 'checked by the box', 'pw.todo': 'nothing typed yet', 'pw.match': 'match the repetition',
  'pw.mismatch': 'The two new passwords differ.',
  'pw.rule.too_short': 'be at least {n} characters long', 'pw.rule.too_long': 'be at most {n} characters long',
  'pw.rule.missing_uppercase': 'contain an uppercase letter', 'pw.rule.missing_lowercase': 'contain a lowercase letter',
  'pw.rule.missing_digit': 'contain a digit (0–9)', 'pw.rule.missing_special': 'contain a special character (not a letter or digit)',
  'pw.rule.recently_used': 'differ from your last {n} passwords',
  'ev.cpu_overload': 'Processor overloaded', 'ev.ram_overload': 'Memory nearly full', 'ev.gpu_overload': 'GPU overloaded', 'ev.gpu_error': 'GPU error',
  'ev.gpu_reset': 'GPU reset', 'ev.gpu_recovered': 'GPU back to normal', 'ev.heat_throttle': 'Too warm: slowed down',
  'ev.heat_restart_llm': 'Too warm: LLM restarted', 'ev.heat_stop_llm': 'Too hot: LLM stopped', 'ev.heat_critical': 'Critical temperature',
  'ev.heat_resolved': 'Temperature back to normal', 'ev.disk_level': 'Disk filling up', 'ev.disk_cleanup': 'Disk cleaned up',
  'ev.vacuum_analyze': 'Database maintenance', 'ev.db_lost': 'Database lost', 'ev.db_recovered': 'Database back',
  'ev.docker_unreachable': 'Container engine unreachable', 'ev.docker_recovered': 'Container engine back', 'ev.service_down': 'Service down',
  'ev.service_restart': 'Service restarted', 'ev.service_stop_start': 'Service stopped and started', 'ev.hard_restart': 'All app services restarted',
  'ev.service_recovered': 'Service back', 'ev.service_failed': 'Service marked failed', 'ev.service_failures': 'Service keeps failing',
  'ev.service_escalated': 'Service escalated', 'ev.reboot_prepare': 'Preparing a reboot', 'ev.reboot': 'Reboot', 'ev.reboot_refused': 'Reboot refused',
  'ev.reboot_disabled': 'Reboot needed but disabled', 'ev.events_dropped': 'Events dropped',
  'level.OK': 'OK', 'level.WARNING': 'Warning', 'level.CRITICAL': 'Critical', 'level.INFO': 'Info',
  'live.connecting': 'Connecting…', 'live.live': 'Live', 'live.reconnecting': 'Reconnecting in {s} s…', 'live.reconnecting_plain': 'Reconnecting…', 'live.closed': 'Disconnected',
  'ov.status': 'System status', 'ov.last_update': 'Last update', 'ov.healing': 'Self-healing', 'ov.stream': 'Live data', 'ov.all_ok': 'Everything is running normally.',
  'ov.perf': 'Performance', 'ov.storage': 'Storage', 'ov.ai': 'AI services', 'ov.network': 'Network', 'ov.chart': 'Last 24 hours', 'ov.workflows': 'Workflow activity', 'ov.links': 'Applications',
  'ov.cpu': 'CPU', 'ov.ram': 'Memory', 'ov.gpu': 'GPU', 'ov.temp': 'Temperature', 'ov.no_gpu': 'no GPU', 'ov.no_sample': 'No measurement yet.',
  'ov.disk_used': 'Used', 'ov.disk_free': 'Free', 'ov.disk_total': 'Size',
  'ov.llm': 'LLM', 'ov.embeddings': 'Embeddings', 'ov.tps': 'Last speed', 'ov.gpu_load': 'GPU load', 'ov.loaded': 'Models in memory', 'ov.none': 'none', 'ov.not_configured': 'not configured',
  'ov.login_for_more': 'Log in to see more', 'ov.playground': 'LLM playground', 'ov.link_n8n': 'workflows', 'ov.link_minio': 'file storage', 'ov.link_llm': 'try the language model',
  'disk.ok': 'Enough space', 'disk.warn': 'Getting full (over 80 %)', 'disk.crit': 'Almost full (over 90 %)',
  'net.host': 'Name', 'net.internet': 'Internet', 'net.webhook': 'Webhook (n8n)', 'net.yes': 'yes', 'net.no': 'no', 'net.tls': 'HTTPS certificate (SHA-256)',
  'chart.title': 'CPU, memory, GPU and temperature over the last 24 hours', 'chart.cpu': 'CPU %', 'chart.ram': 'Memory %', 'chart.gpu': 'GPU %', 'chart.temp': 'Temperature °C',
  'chart.source': '{n} points from {src}, then live.',
  'chart.see_table': 'The table “Chart values” holds its values.', 'chart.table': 'Chart values: the newest, then one an hour, newest first', 'chart.time': 'Time',
  'wf.nodata': 'No workflow data available.', 'wf.total': 'Runs (24 h)', 'wf.success': 'Succeeded', 'wf.error': 'Failed', 'wf.active': 'Running now', 'wf.none': 'No runs yet.',
  'wf.st.success': 'OK', 'wf.st.error': 'Error', 'wf.st.running': 'Running',
  'foot.version': 'Version', 'foot.build': 'Build', 'foot.host': 'Host', 'foot.uptime': 'Up',
  'heal.loop.healthy': 'active', 'heal.loop.degraded': 'slow', 'heal.loop.unhealthy': 'not responding', 'heal.loop.not_running': 'not running',
  'heal.disabled': 'switched off', 'heal.failed': 'gave up on {s}', 'heal.last': 'Last event',
  'heal.stats': 'State and statistics', 'heal.events': 'Events', 'heal.severity': 'Severity', 'heal.all': 'All', 'heal.auto': 'Refresh automatically',
  'heal.time': 'Time', 'heal.sev': 'Severity', 'heal.service': 'Service', 'heal.what': 'What happened', 'heal.action': 'Action', 'heal.result': 'Result',
  'heal.no_events': 'No events.', 'heal.loop': 'Healing loop', 'heal.enabled': 'Enabled', 'heal.heartbeat': 'Heartbeat age', 'heal.failed_services': 'Given up',
  'heal.uptime': 'Uptime (7 days)', 'heal.actions': 'Actions (succeeded / total)',
  'state.starting': 'starting', 'state.healthy': 'running', 'state.unhealthy': 'unhealthy', 'state.restarting': 'restarting', 'state.stopped': 'stopped',
  'state.failed': 'failed', 'state.image_missing': 'image missing', 'state.unknown': 'unknown',
  'role.llm': 'LLM', 'role.embeddings': 'embeddings', 'role.workflow': 'workflows', 'role.storage': 'storage', 'role.other': 'other',
  'svc.title': 'Services', 'svc.logs': 'Log', 'svc.models': 'LLM models', 'svc.playground': 'LLM playground',
  'svc.name': 'Service', 'svc.state': 'State', 'svc.restarts': 'Restarts', 'svc.last_exit': 'Last exit', 'svc.since': 'Since', 'svc.actions': 'Actions',
  'svc.start': 'Start', 'svc.stop': 'Stop', 'svc.restart': 'Restart', 'svc.show_logs': 'Log', 'svc.critical': 'critical', 'svc.oom': 'out of memory', 'svc.none': 'No services configured.',
  'svc.confirm_start': 'Start {s}?', 'svc.confirm_stop': 'Stop {s}? It stays stopped until you start it again.', 'svc.confirm_restart': 'Restart {s}?',
  'svc.done': '{a}: {s} done.', 'svc.log_service': 'Service whose log to show', 'svc.follow': 'Follow', 'svc.stop_follow': 'Stop following',
  'svc.log_following': 'Following {s}…', 'svc.log_stopped': 'Stopped.',
  'svc.image_pull': 'image {d} of {t}, layers {l}/{n}, try {a}', 'svc.gpu_cpu': 'runs on the CPU (no GPU runtime in Docker)', 'svc.gpu_on': 'uses the GPU',
  'svc.model': 'Model', 'svc.size': 'Size', 'svc.modified': 'Changed', 'svc.unload': 'Unload', 'svc.delete': 'Delete', 'svc.unload_all': 'Unload all from memory',
  'svc.model_name': 'Model to download', 'svc.pull': 'Download', 'svc.pull_progress': 'Download progress', 'svc.pulling': 'Downloading {m}…', 'svc.pulled': '{m} is ready.',
  'svc.pull_failed': 'Download failed: {e}', 'svc.model_required': 'Enter a model name.', 'svc.no_models': 'No models installed.',
  'dl.suggested': 'Suggested models', 'dl.about': 'What it is', 'dl.download': 'Download', 'dl.memory': 'Memory', 'dl.queue': 'Downloads', 'dl.state': 'State', 'dl.progress': 'Progress',
  'dl.state_queued': 'waiting', 'dl.state_running': 'downloading', 'dl.state_retrying': 'stalled, resuming', 'dl.state_done': 'done', 'dl.state_failed': 'failed', 'dl.state_cancelled': 'cancelled',
  'nav.setup': 'Setup', 'setup.title': 'Set up the box', 'setup.intro': 'A few things, each can be changed later under Settings. Downloads go on while you continue.',
  'setup.name_title': '1. Its name', 'setup.name': 'Name on the network', 'setup.name_help': 'Letters, digits and dashes. The box then answers at http://<name>.local.', 'setup.save': 'Save',
  'setup.name_saved': 'The box now answers as {n}.', 'setup.models_title': '2. Models', 'setup.models_why': 'Pick the models to install. Each says how much disk and memory it needs; one that does not fit this box cannot be chosen.',
  'setup.reboot_title': '3. Restarts', 'setup.reboot_why': 'When nothing else helps (a hung GPU, the memory full for a long time), the box can restart itself. Running workflows get a minute to finish.',
  'setup.reboot': 'Let self-healing restart the box', 'setup.reboot_on': 'The box may restart itself as a last resort.', 'setup.reboot_off': 'The box never restarts itself.',
  'setup.finish': 'Done: try the chat', 'setup.not_writable': 'This box has no config file to save settings to.', 'setup.again': 'Run the setup again', 'setup.again_why': 'Name, models, restarts and notifications, step by step.',
  'dl.eta': '{d} left', 'dl.cancel': 'Cancel', 'dl.partials': '{n} unfinished downloads take {b} on the disk.', 'dl.remove_partials': 'Remove unfinished downloads', 'dl.partials_removed': '{b} freed.',
  'svc.confirm_delete': 'Delete the model {m}?', 'svc.deleted': '{m} deleted.', 'svc.unloaded': 'Unloaded: {m}',
  'svc.prompt': 'Your message', 'svc.send': 'Send',
  'upd.upload': 'Install an update', 'upd.status': 'Progress', 'upd.history': 'History', 'upd.file': 'Update bundle', 'upd.upload_btn': 'Upload and check',
  'upd.progress': 'Upload progress', 'upd.pick': 'Choose a bundle file first.', 'upd.apply': 'Install now', 'upd.validated': 'Checked bundle',
  'upd.version': 'Version', 'upd.min_version': 'Needs at least', 'upd.signature': 'Signature', 'upd.sig_ok': 'valid ({k}, {a})', 'upd.sig_bad': 'not valid',
  'upd.created': 'Built', 'upd.size': 'Size', 'upd.images': 'Images', 'upd.migrations': 'Database changes', 'upd.configs': 'Configuration', 'upd.package': 'New arasuld',
  'upd.reboot': 'Needs a restart', 'upd.notes': 'Release notes', 'upd.confirm': 'Install this update now? The services restart during the update.',
  'upd.step_progress': 'Update progress', 'upd.log': 'Update log', 'upd.unavailable': 'Updates are not available on this version of the box.', 'upd.no_history': 'No updates yet.',
  'upd.from': 'From', 'upd.source': 'Source', 'upd.result': 'Result', 'upd.started': 'Started', 'upd.finished': 'Finished',
  'upd.step_done': 'done', 'upd.step_now': 'in progress', 'upd.step_todo': 'to do',
  'upd.st.idle': 'Nothing in progress', 'upd.st.uploading': 'Uploading', 'upd.st.validated': 'Checked', 'upd.st.backing_up': 'Backing up',
  'upd.st.loading_images': 'Loading images', 'upd.st.migrating': 'Updating the database', 'upd.st.switching': 'Switching over', 'upd.st.verifying': 'Verifying',
  'upd.st.done': 'Done', 'upd.st.rolling_back': 'Rolling back', 'upd.st.rolled_back': 'Rolled back', 'upd.st.failed': 'Failed',
  'upd.err.invalid_bundle': 'This file is not a valid update bundle.', 'upd.err.payload_mismatch': 'The bundle is damaged: a part of it does not match its signed checksum.',
  'upd.err.signature_invalid': 'The signature does not match any trusted key: this bundle was not made by the vendor or was changed.',
  'upd.err.no_trusted_key': 'No update key is installed on this box, so no bundle can be trusted.',
  'upd.err.version_not_newer': 'This version is not newer than the one installed.', 'upd.err.min_version_not_met': 'This box runs a version too old for this bundle; install the updates in between first.',
  'upd.err.bundle_too_large': 'The bundle is larger than this box accepts.', 'upd.err.bundle_unreadable': 'The bundle could not be read.',
  'upd.err.update_in_progress': 'Another update is in progress. Wait until it has finished.', 'upd.err.no_update_staged': 'There is no checked bundle to install. Upload it again.',
  'upd.res.done': 'installed', 'upd.res.rolled_back': 'rolled back', 'upd.res.failed': 'failed', 'upd.res.rejected': 'rejected',
  'logs.live': 'Live log', 'logs.search': 'Search', 'logs.source': 'Log', 'logs.level': 'Level', 'logs.all_levels': 'All levels', 'logs.query': 'Search for',
  'logs.search_btn': 'Search', 'logs.empty': 'No lines yet; new ones appear here as they are written.', 'logs.matches': '{n} matches', 'logs.unavailable': 'Logs are not available on this version of the box.',
  'set.password': 'Password', 'set.sessions': 'Sessions', 'set.changed': 'Password changed. Other sessions were logged out.',
  'set.logout_all': 'Log out everywhere', 'set.logout_here': 'Log out here', 'set.confirm_all': 'Log out every session, this one included?',
  'set.ip': 'Address', 'set.agent': 'Browser', 'set.created': 'Logged in', 'set.active': 'Last active', 'set.expires': 'Expires', 'set.this': 'this session',
  'key.title': 'API keys', 'key.hint': 'For apps and scripts: an OpenAI-compatible client uses {url} with a key that has the “Language model” scope.',
  'key.name': 'Name', 'key.scopes': 'May use', 'key.expiry': 'Valid for', 'key.never': 'never expires', 'key.days': '{n} days', 'key.create': 'Create key',
  'key.scope.llm': 'Language model', 'key.scope.embeddings': 'Embeddings', 'key.scope.metrics': 'Metrics', 'key.scope.admin': 'Administration',
  'key.key': 'Key', 'key.created': 'Created', 'key.used': 'Last used', 'key.expires': 'Expires', 'key.action': 'Action', 'key.unused': 'not yet',
  'key.revoke': 'Revoke', 'key.revoke_named': 'Revoke the key “{name}”', 'key.confirm_revoke': 'Revoke the key “{name}”? Apps using it stop working at once.',
  'key.revoked': 'Key “{name}” revoked.', 'key.none': 'No API keys yet.', 'key.need_name': 'Give the key a name.', 'key.need_scope': 'Choose at least one thing the key may use.',
  'key.once': 'Copy the key now: it is shown only this once.', 'key.new_label': 'The new API key', 'key.copy': 'Copy', 'key.copied': 'Key copied.',
  'err.too_many_keys': 'There are too many keys; revoke one first.',
};

/** @type {Dict} */
const de = {
  'nav.label': 'Hauptmenü', 'nav.language': 'Sprache', 'nav.logout': 'Abmelden', 'nav.login': 'Anmelden',
  'nav.overview': 'Übersicht', 'nav.services': 'Dienste', 'nav.healing': 'Selbstheilung', 'nav.updates': 'Updates', 'nav.logs': 'Protokolle', 'nav.settings': 'Einstellungen',
  'common.cancel': 'Abbrechen', 'common.confirm': 'Bestätigen', 'common.loading': 'Lädt…', 'common.next': 'Weiter', 'common.prev': 'Zurück',
  'common.page': 'Seite {p} von {n} ({total} insgesamt)', 'common.unknown': 'unbekannt', 'common.skip': 'Zum Inhalt springen',
  'unit.d': 'T', 'unit.h': 'Std', 'unit.min': 'Min', 'unit.s': 's',
  'err.network': 'Die Box ist nicht erreichbar. Bitte die Netzwerkverbindung prüfen.', 'err.rate': 'Zu viele Anfragen. Bitte in {s} s erneut versuchen.',
  'err.password_policy': 'Das neue Passwort erfüllt die Regeln nicht.', 'err.wrong_current_password': 'Das aktuelle Passwort ist falsch.',
  'err.too_many_attempts': 'Zu viele Fehlversuche. Bitte kurz warten.', 'err.cross_origin': 'Diese Anfrage kam von einer anderen Webseite und wurde abgelehnt.', 'err.revocation_not_saved': 'Abgemeldet, aber die Box konnte es nicht speichern (ist der Speicher voll?).', 'err.too_many_streams': 'Zu viele Live-Ansichten offen; bitte eine schließen.', 'err.database_unavailable': 'Die Datenbank ist gerade nicht erreichbar.',
  'err.docker_unavailable': 'Die Container-Engine ist nicht erreichbar.', 'err.llm_unavailable': 'Der LLM-Dienst läuft nicht.',
  'err.csrf_failed': 'Die Sitzung ist veraltet. Bitte die Seite neu laden.',
  'login.title': 'Bei Arasul anmelden', 'login.hint': 'Mit dem Admin-Konto anmelden. Das erste Passwort steht in /etc/arasul/secrets/initial-admin-password.',
  'login.user': 'Benutzername', 'login.pass': 'Passwort', 'login.submit': 'Anmelden', 'login.busy': 'Wird geprüft…', 'login.empty': 'Bitte das Passwort eingeben.',
  'login.invalid': 'Benutzername oder Passwort ist falsch.', 'login.locked': 'Zu viele Fehlversuche. Noch {s} s gesperrt.', 'login.unlocked': 'Sie können es jetzt erneut versuchen.',
  'login.change_title': 'Eigenes Passwort wählen', 'login.change_why': 'Dies ist die erste Anmeldung mit dem erzeugten Passwort. Bitte vor dem Weitermachen ein neues wählen.',
  'pw.current': 'Aktuelles Passwort', 'pw.new': 'Neues Passwort', 'pw.again': 'Neues Passwort wiederholen', 'pw.submit': 'Passwort ändern',
  'pw.policy': 'Das neue Passwort muss:', 'pw.met': 'erfüllt', 'pw.unmet': 'noch nicht erfüllt', 'pw.checked': 'wird von der Box geprüft', 'pw.todo': 'noch nichts eingegeben', 'pw.match': 'mit der Wiederholung übereinstimmen',
  'pw.mismatch': 'Die beiden neuen Passwörter unterscheiden sich.',
  'pw.rule.too_short': 'mindestens {n} Zeichen lang sein', 'pw.rule.too_long': 'höchstens {n} Zeichen lang sein',
  'pw.rule.missing_uppercase': 'einen Großbuchstaben enthalten', 'pw.rule.missing_lowercase': 'einen Kleinbuchstaben enthalten',
  'pw.rule.missing_digit': 'eine Ziffer (0–9) enthalten', 'pw.rule.missing_special': 'ein Sonderzeichen enthalten (kein Buchstabe, keine Ziffer)',
  'pw.rule.recently_used': 'sich von den letzten {n} Passwörtern unterscheiden',
  'ev.cpu_overload': 'Prozessor überlastet', 'ev.ram_overload': 'Arbeitsspeicher fast voll', 'ev.gpu_overload': 'GPU überlastet',
  'ev.gpu_error': 'GPU-Fehler', 'ev.gpu_reset': 'GPU zurückgesetzt', 'ev.gpu_recovered': 'GPU wieder normal',
  'ev.heat_throttle': 'Zu warm: gedrosselt', 'ev.heat_restart_llm': 'Zu warm: LLM neu gestartet', 'ev.heat_stop_llm': 'Zu heiß: LLM angehalten',
  'ev.heat_critical': 'Kritische Temperatur', 'ev.heat_resolved': 'Temperatur wieder normal', 'ev.disk_level': 'Datenträger läuft voll',
  'ev.disk_cleanup': 'Datenträger aufgeräumt', 'ev.vacuum_analyze': 'Datenbankpflege', 'ev.db_lost': 'Datenbank nicht erreichbar',
  'ev.db_recovered': 'Datenbank wieder da', 'ev.docker_unreachable': 'Container-Engine nicht erreichbar',
  'ev.docker_recovered': 'Container-Engine wieder da', 'ev.service_down': 'Dienst ausgefallen', 'ev.service_restart': 'Dienst neu gestartet',
  'ev.service_stop_start': 'Dienst angehalten und gestartet', 'ev.hard_restart': 'Alle App-Dienste neu gestartet', 'ev.service_recovered': 'Dienst wieder da',
  'ev.service_failed': 'Dienst als fehlgeschlagen markiert', 'ev.service_failures': 'Dienst fällt wiederholt aus', 'ev.service_escalated': 'Dienst eskaliert',
  'ev.reboot_prepare': 'Neustart wird vorbereitet', 'ev.reboot': 'Neustart', 'ev.reboot_refused': 'Neustart abgelehnt',
  'ev.reboot_disabled': 'Neustart nötig, aber deaktiviert', 'ev.events_dropped': 'Ereignisse verworfen',
  'reason.database_down': 'Die Datenbank ist nicht erreichbar; Messwerte werden bis zu ihrer Rückkehr im Speicher gehalten.',
  'reason.no_sample': 'Es wurde noch kein Messwert erfasst.', 'reason.cpu_sustained': 'Der Prozessor liegt seit über 5 Minuten über 80 %.',
  'reason.temperature_critical': 'Die Box ist zu heiß: {1} °C (Grenze 85 °C).', 'reason.disk_high': 'Der Datenträger ist zu {1} % voll (Warnung ab 80 %).',
  'reason.service_down': 'Der Dienst {1} ist ausgefallen ({2}).', 'reason.critical_service_down': 'Der Dienst {1} ist ausgefallen ({2}).',
  'level.OK': 'OK', 'level.WARNING': 'Warnung', 'level.CRITICAL': 'Kritisch', 'level.INFO': 'Info',
  'live.connecting': 'Verbinde…', 'live.live': 'Live', 'live.reconnecting': 'Neuer Versuch in {s} s…', 'live.reconnecting_plain': 'Verbinde neu…', 'live.closed': 'Getrennt',
  'ov.status': 'Systemstatus', 'ov.last_update': 'Letzte Messung', 'ov.healing': 'Selbstheilung', 'ov.stream': 'Live-Daten', 'ov.all_ok': 'Alles läuft normal.',
  'ov.perf': 'Leistung', 'ov.storage': 'Speicher', 'ov.ai': 'KI-Dienste', 'ov.network': 'Netzwerk', 'ov.chart': 'Letzte 24 Stunden', 'ov.workflows': 'Workflow-Aktivität', 'ov.links': 'Anwendungen',
  'ov.cpu': 'CPU', 'ov.ram': 'Arbeitsspeicher', 'ov.gpu': 'GPU', 'ov.temp': 'Temperatur', 'ov.no_gpu': 'keine GPU', 'ov.no_sample': 'Noch keine Messung.',
  'ov.disk_used': 'Belegt', 'ov.disk_free': 'Frei', 'ov.disk_total': 'Größe',
  'ov.llm': 'LLM', 'ov.embeddings': 'Embeddings', 'ov.tps': 'Letzte Geschwindigkeit', 'ov.gpu_load': 'GPU-Last', 'ov.loaded': 'Geladene Modelle', 'ov.none': 'keine', 'ov.not_configured': 'nicht eingerichtet',
  'ov.login_for_more': 'Anmelden für mehr', 'ov.playground': 'LLM-Spielwiese', 'ov.link_n8n': 'Workflows', 'ov.link_minio': 'Dateispeicher', 'ov.link_llm': 'das Sprachmodell ausprobieren',
  'disk.ok': 'Genug Platz', 'disk.warn': 'Wird voll (über 80 %)', 'disk.crit': 'Fast voll (über 90 %)',
  'net.host': 'Name', 'net.internet': 'Internet', 'net.webhook': 'Webhook (n8n)', 'net.yes': 'ja', 'net.no': 'nein', 'net.tls': 'HTTPS-Zertifikat (SHA-256)',
  'chart.title': 'CPU, Arbeitsspeicher, GPU und Temperatur der letzten 24 Stunden', 'chart.cpu': 'CPU %', 'chart.ram': 'Arbeitsspeicher %', 'chart.gpu': 'GPU %', 'chart.temp': 'Temperatur °C',
  'chart.source': '{n} Punkte aus {src}, danach live.',
  'chart.see_table': 'Die Tabelle „Diagrammwerte“ enthält seine Werte.', 'chart.table': 'Diagrammwerte: der neueste, dann einer je Stunde, neueste zuerst', 'chart.time': 'Zeit',
  'wf.nodata': 'Keine Workflow-Daten verfügbar.', 'wf.total': 'Läufe (24 Std)', 'wf.success': 'Erfolgreich', 'wf.error': 'Fehlgeschlagen', 'wf.active': 'Laufen gerade', 'wf.none': 'Noch keine Läufe.',
  'wf.st.success': 'OK', 'wf.st.error': 'Fehler', 'wf.st.running': 'Läuft',
  'foot.version': 'Version', 'foot.build': 'Build', 'foot.host': 'Host', 'foot.uptime': 'Läuft seit',
  'heal.loop.healthy': 'aktiv', 'heal.loop.degraded': 'langsam', 'heal.loop.unhealthy': 'reagiert nicht', 'heal.loop.not_running': 'läuft nicht',
  'heal.disabled': 'ausgeschaltet', 'heal.failed': 'aufgegeben: {s}', 'heal.last': 'Letztes Ereignis',
  'heal.stats': 'Zustand und Statistik', 'heal.events': 'Ereignisse', 'heal.severity': 'Schwere', 'heal.all': 'Alle', 'heal.auto': 'Automatisch aktualisieren',
  'heal.time': 'Zeit', 'heal.sev': 'Schwere', 'heal.service': 'Dienst', 'heal.what': 'Was geschah', 'heal.action': 'Maßnahme', 'heal.result': 'Ergebnis',
  'heal.no_events': 'Keine Ereignisse.', 'heal.loop': 'Heilungsschleife', 'heal.enabled': 'Eingeschaltet', 'heal.heartbeat': 'Alter des Lebenszeichens', 'heal.failed_services': 'Aufgegeben',
  'heal.uptime': 'Verfügbarkeit (7 Tage)', 'heal.actions': 'Maßnahmen (erfolgreich / gesamt)',
  'state.starting': 'startet', 'state.healthy': 'läuft', 'state.unhealthy': 'gestört', 'state.restarting': 'startet neu', 'state.stopped': 'gestoppt',
  'state.failed': 'ausgefallen', 'state.image_missing': 'Image fehlt', 'state.unknown': 'unbekannt',
  'role.llm': 'LLM', 'role.embeddings': 'Embeddings', 'role.workflow': 'Workflows', 'role.storage': 'Speicher', 'role.other': 'Sonstiges',
  'svc.title': 'Dienste', 'svc.logs': 'Protokoll', 'svc.models': 'LLM-Modelle', 'svc.playground': 'LLM-Spielwiese',
  'svc.name': 'Dienst', 'svc.state': 'Zustand', 'svc.restarts': 'Neustarts', 'svc.last_exit': 'Letzter Exit', 'svc.since': 'Seit', 'svc.actions': 'Aktionen',
  'svc.start': 'Starten', 'svc.stop': 'Stoppen', 'svc.restart': 'Neu starten', 'svc.show_logs': 'Protokoll', 'svc.critical': 'kritisch', 'svc.oom': 'Speicher voll', 'svc.none': 'Keine Dienste eingerichtet.',
  'svc.confirm_start': '{s} starten?', 'svc.confirm_stop': '{s} stoppen? Der Dienst bleibt aus, bis Sie ihn wieder starten.', 'svc.confirm_restart': '{s} neu starten?',
  'svc.done': '{a}: {s} erledigt.', 'svc.log_service': 'Dienst, dessen Protokoll angezeigt wird', 'svc.follow': 'Verfolgen', 'svc.stop_follow': 'Nicht mehr verfolgen',
  'svc.log_following': 'Verfolge {s}…', 'svc.log_stopped': 'Angehalten.',
  'svc.image_pull': 'Image {d} von {t}, Schichten {l}/{n}, Versuch {a}', 'svc.gpu_cpu': 'läuft auf der CPU (keine GPU-Laufzeit in Docker)', 'svc.gpu_on': 'nutzt die GPU',
  'svc.model': 'Modell', 'svc.size': 'Größe', 'svc.modified': 'Geändert', 'svc.unload': 'Entladen', 'svc.delete': 'Löschen', 'svc.unload_all': 'Alle aus dem Speicher entladen',
  'svc.model_name': 'Modell zum Herunterladen', 'svc.pull': 'Herunterladen', 'svc.pull_progress': 'Download-Fortschritt', 'svc.pulling': 'Lade {m}…', 'svc.pulled': '{m} ist bereit.',
  'svc.pull_failed': 'Download fehlgeschlagen: {e}', 'svc.model_required': 'Bitte einen Modellnamen eingeben.', 'svc.no_models': 'Keine Modelle installiert.',
  'dl.suggested': 'Empfohlene Modelle', 'dl.about': 'Was es ist', 'dl.download': 'Download', 'dl.memory': 'Arbeitsspeicher', 'dl.queue': 'Downloads', 'dl.state': 'Zustand', 'dl.progress': 'Fortschritt',
  'dl.state_queued': 'wartet', 'dl.state_running': 'lädt', 'dl.state_retrying': 'stockt, wird fortgesetzt', 'dl.state_done': 'fertig', 'dl.state_failed': 'fehlgeschlagen', 'dl.state_cancelled': 'abgebrochen',
  'nav.setup': 'Einrichtung', 'setup.title': 'Das Gerät einrichten', 'setup.intro': 'Ein paar Dinge, jedes lässt sich später unter Einstellungen ändern. Downloads laufen weiter, während du weitermachst.',
  'setup.name_title': '1. Sein Name', 'setup.name': 'Name im Netzwerk', 'setup.name_help': 'Buchstaben, Ziffern und Bindestriche. Das Gerät ist dann unter http://<name>.local erreichbar.', 'setup.save': 'Speichern',
  'setup.name_saved': 'Das Gerät ist jetzt als {n} erreichbar.', 'setup.models_title': '2. Modelle', 'setup.models_why': 'Wähle die Modelle, die installiert werden. Bei jedem steht, wie viel Speicherplatz und Arbeitsspeicher es braucht; eins, das nicht passt, kann nicht gewählt werden.',
  'setup.reboot_title': '3. Neustarts', 'setup.reboot_why': 'Wenn nichts anderes hilft (eine hängende GPU, lange voller Arbeitsspeicher), kann sich das Gerät selbst neu starten. Laufende Workflows bekommen eine Minute zum Beenden.',
  'setup.reboot': 'Selbstheilung darf das Gerät neu starten', 'setup.reboot_on': 'Das Gerät darf sich als letztes Mittel selbst neu starten.', 'setup.reboot_off': 'Das Gerät startet sich nie selbst neu.',
  'setup.finish': 'Fertig: Chat ausprobieren', 'setup.not_writable': 'Dieses Gerät hat keine Konfigurationsdatei für Einstellungen.', 'setup.again': 'Einrichtung erneut starten', 'setup.again_why': 'Name, Modelle, Neustarts und Benachrichtigungen, Schritt für Schritt.',
  'dl.eta': 'noch {d}', 'dl.cancel': 'Abbrechen', 'dl.partials': '{n} unfertige Downloads belegen {b} auf der Festplatte.', 'dl.remove_partials': 'Unfertige Downloads entfernen', 'dl.partials_removed': '{b} freigegeben.',
  'svc.confirm_delete': 'Modell {m} löschen?', 'svc.deleted': '{m} gelöscht.', 'svc.unloaded': 'Entladen: {m}',
  'svc.prompt': 'Ihre Nachricht', 'svc.send': 'Senden',
  'upd.upload': 'Update installieren', 'upd.status': 'Fortschritt', 'upd.history': 'Verlauf', 'upd.file': 'Update-Paket', 'upd.upload_btn': 'Hochladen und prüfen',
  'upd.progress': 'Upload-Fortschritt', 'upd.pick': 'Bitte zuerst eine Paketdatei wählen.', 'upd.apply': 'Jetzt installieren', 'upd.validated': 'Geprüftes Paket',
  'upd.version': 'Version', 'upd.min_version': 'Benötigt mindestens', 'upd.signature': 'Signatur', 'upd.sig_ok': 'gültig ({k}, {a})', 'upd.sig_bad': 'ungültig',
  'upd.created': 'Erstellt', 'upd.size': 'Größe', 'upd.images': 'Images', 'upd.migrations': 'Datenbankänderungen', 'upd.configs': 'Konfiguration', 'upd.package': 'Neuer arasuld',
  'upd.reboot': 'Neustart nötig', 'upd.notes': 'Versionshinweise', 'upd.confirm': 'Dieses Update jetzt installieren? Die Dienste starten dabei neu.',
  'upd.step_progress': 'Update-Fortschritt', 'upd.log': 'Update-Protokoll', 'upd.unavailable': 'Updates sind in dieser Version der Box nicht verfügbar.', 'upd.no_history': 'Noch keine Updates.',
  'upd.from': 'Von', 'upd.source': 'Quelle', 'upd.result': 'Ergebnis', 'upd.started': 'Begonnen', 'upd.finished': 'Beendet',
  'upd.step_done': 'erledigt', 'upd.step_now': 'läuft', 'upd.step_todo': 'offen',
  'upd.st.idle': 'Nichts in Arbeit', 'upd.st.uploading': 'Lädt hoch', 'upd.st.validated': 'Geprüft', 'upd.st.backing_up': 'Sicherung',
  'upd.st.loading_images': 'Images laden', 'upd.st.migrating': 'Datenbank aktualisieren', 'upd.st.switching': 'Umschalten', 'upd.st.verifying': 'Überprüfen',
  'upd.st.done': 'Fertig', 'upd.st.rolling_back': 'Wird zurückgerollt', 'upd.st.rolled_back': 'Zurückgerollt', 'upd.st.failed': 'Fehlgeschlagen',
  'upd.err.invalid_bundle': 'Diese Datei ist kein gültiges Update-Paket.', 'upd.err.payload_mismatch': 'Das Paket ist beschädigt: Ein Teil passt nicht zu seiner signierten Prüfsumme.',
  'upd.err.signature_invalid': 'Die Signatur passt zu keinem vertrauenswürdigen Schlüssel: Das Paket stammt nicht vom Hersteller oder wurde verändert.',
  'upd.err.no_trusted_key': 'Auf dieser Box ist kein Update-Schlüssel installiert, daher kann keinem Paket vertraut werden.',
  'upd.err.version_not_newer': 'Diese Version ist nicht neuer als die installierte.', 'upd.err.min_version_not_met': 'Die Version dieser Box ist für dieses Paket zu alt; bitte zuerst die Updates dazwischen installieren.',
  'upd.err.bundle_too_large': 'Das Paket ist größer, als diese Box annimmt.', 'upd.err.bundle_unreadable': 'Das Paket konnte nicht gelesen werden.',
  'upd.err.update_in_progress': 'Ein anderes Update läuft gerade. Bitte warten, bis es fertig ist.', 'upd.err.no_update_staged': 'Es gibt kein geprüftes Paket zum Installieren. Bitte erneut hochladen.',
  'upd.res.done': 'installiert', 'upd.res.rolled_back': 'zurückgerollt', 'upd.res.failed': 'fehlgeschlagen', 'upd.res.rejected': 'abgelehnt',
  'logs.live': 'Live-Protokoll', 'logs.search': 'Suche', 'logs.source': 'Protokoll', 'logs.level': 'Stufe', 'logs.all_levels': 'Alle Stufen', 'logs.query': 'Suchen nach',
  'logs.search_btn': 'Suchen', 'logs.empty': 'Noch keine Zeilen; neue erscheinen hier, sobald sie geschrieben werden.', 'logs.matches': '{n} Treffer', 'logs.unavailable': 'Protokolle sind in dieser Version der Box nicht verfügbar.',
  'set.password': 'Passwort', 'set.sessions': 'Sitzungen', 'set.changed': 'Passwort geändert. Andere Sitzungen wurden abgemeldet.',
  'set.logout_all': 'Überall abmelden', 'set.logout_here': 'Hier abmelden', 'set.confirm_all': 'Alle Sitzungen abmelden, auch diese?',
  'set.ip': 'Adresse', 'set.agent': 'Browser', 'set.created': 'Angemeldet', 'set.active': 'Zuletzt aktiv', 'set.expires': 'Läuft ab', 'set.this': 'diese Sitzung',
  'key.title': 'API-Schlüssel', 'key.hint': 'Für Apps und Skripte: ein OpenAI-kompatibler Client nutzt {url} mit einem Schlüssel, der „Sprachmodell“ darf.',
  'key.name': 'Name', 'key.scopes': 'Darf nutzen', 'key.expiry': 'Gültig für', 'key.never': 'läuft nie ab', 'key.days': '{n} Tage', 'key.create': 'Schlüssel erstellen',
  'key.scope.llm': 'Sprachmodell', 'key.scope.embeddings': 'Embeddings', 'key.scope.metrics': 'Messwerte', 'key.scope.admin': 'Verwaltung',
  'key.key': 'Schlüssel', 'key.created': 'Erstellt', 'key.used': 'Zuletzt genutzt', 'key.expires': 'Läuft ab', 'key.action': 'Aktion', 'key.unused': 'noch nie',
  'key.revoke': 'Widerrufen', 'key.revoke_named': 'Schlüssel „{name}“ widerrufen', 'key.confirm_revoke': 'Schlüssel „{name}“ widerrufen? Apps, die ihn nutzen, funktionieren sofort nicht mehr.',
  'key.revoked': 'Schlüssel „{name}“ widerrufen.', 'key.none': 'Noch keine API-Schlüssel.', 'key.need_name': 'Gib dem Schlüssel einen Namen.', 'key.need_scope': 'Wähle mindestens eine Sache, die der Schlüssel nutzen darf.',
  'key.once': 'Kopiere den Schlüssel jetzt: Er wird nur dieses eine Mal gezeigt.', 'key.new_label': 'Der neue API-Schlüssel', 'key.copy': 'Kopieren', 'key.copied': 'Schlüssel kopiert.',
  'err.too_many_keys': 'Es gibt zu viele Schlüssel; widerrufe zuerst einen.',
};

/** @type {Record<string, Dict>} */
const DICTS = { en, de };
export const LANGS = Object.keys(DICTS);
const KEY = 'arasul.lang';

function initial() {
  let saved = null;
  try { saved = localStorage.getItem(KEY); } catch { /* storage off */ }
  if (saved && DICTS[saved]) return saved;
  return (navigator.language || 'en').toLowerCase().startsWith('de') ? 'de' : 'en';
}

let current = initial();

/** The page's language: `en` or `de` (also the locale of every number format). */
export function lang() { return current; }

/** @type {Map<string, Intl.NumberFormat>} */
const numberFormats = new Map();

/**
 * `v` with `min` to `max` fraction digits in the page's language ("1.5",
 * "1,5"; "1,234" and "1.234"): the one number format of the dashboard,
 * made once per language and precision. ui.js builds the units on it.
 * @param {number} v
 * @param {number} [min]
 * @param {number} [max]
 */
export function formatNumber(v, min = 0, max = 3) {
  const key = `${current}|${min}|${max}`;
  let f = numberFormats.get(key);
  if (!f) {
    f = new Intl.NumberFormat(current, { minimumFractionDigits: min, maximumFractionDigits: max });
    numberFormats.set(key, f);
  }
  return f.format(v);
}

/** @param {string} l */
export function setLang(l) {
  if (!DICTS[l]) return;
  current = l;
  try { localStorage.setItem(KEY, l); } catch { /* storage off */ }
  document.documentElement.lang = l;
}

/**
 * Whether the current language has its own text for key (no fallback).
 * @param {string} key
 */
export function has(key) {
  return key in DICTS[current];
}

/**
 * The string for key in the current language ({name} filled from params;
 * numbers in the language's format).
 * @param {string} key
 * @param {Params} [params]
 */
export function t(key, params) {
  return fill(DICTS[current][key] ?? en[key] ?? key, params);
}

/**
 * A screen's own strings ({ en: {…}, de: {…} }), looked up like t().
 * @param {{ en: Dict } & Record<string, Dict>} table
 * @returns {(key: string, params?: Params) => string}
 */
export function strings(table) {
  return (key, params) => fill((table[current] || table.en)[key] ?? table.en[key] ?? key, params);
}

/**
 * @param {string} s
 * @param {Params} [params]
 */
function fill(s, params) {
  return params ? s.replace(/\{(\w+)\}/g, (_, k) => {
    const v = params[k];
    return typeof v === 'number' ? formatNumber(v) : String(v ?? `{${k}}`);
  }) : s;
}
