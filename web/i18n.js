// English and German. The choice is remembered in localStorage; the first
// visit follows the browser's language.
const en = {
  'nav.label': 'Main', 'nav.language': 'Language', 'nav.logout': 'Log out', 'nav.login': 'Log in',
  'nav.overview': 'Overview', 'nav.services': 'Services', 'nav.healing': 'Self-healing', 'nav.updates': 'Updates', 'nav.logs': 'Logs', 'nav.settings': 'Settings',
  'common.cancel': 'Cancel', 'common.confirm': 'Confirm', 'common.loading': 'Loading…', 'common.next': 'Next', 'common.prev': 'Previous',
  'common.page': 'Page {p} of {n} ({total} in all)', 'common.unknown': 'unknown', 'common.skip': 'Skip to content',
  'unit.d': 'd', 'unit.h': 'h', 'unit.min': 'min', 'unit.s': 's',
  'err.network': 'The box cannot be reached. Check the network connection.', 'err.rate': 'Too many requests. Try again in {s} s.',
  'err.password_policy': 'The new password does not meet the rules.', 'err.wrong_current_password': 'The current password is wrong.',
  'err.too_many_attempts': 'Too many failed attempts. Wait a moment and try again.', 'err.database_unavailable': 'The database is not reachable right now.',
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
  'level.OK': 'OK', 'level.WARNING': 'Warning', 'level.CRITICAL': 'Critical', 'level.INFO': 'Info',
  'live.connecting': 'Connecting…', 'live.live': 'Live', 'live.reconnecting': 'Reconnecting in {s} s…', 'live.reconnecting_plain': 'Reconnecting…', 'live.closed': 'Disconnected',
  'ov.status': 'System status', 'ov.last_update': 'Last update', 'ov.healing': 'Self-healing', 'ov.stream': 'Live data', 'ov.all_ok': 'Everything is running normally.',
  'ov.perf': 'Performance', 'ov.storage': 'Storage', 'ov.ai': 'AI services', 'ov.network': 'Network', 'ov.chart': 'Last 24 hours', 'ov.workflows': 'Workflow activity', 'ov.links': 'Applications',
  'ov.cpu': 'CPU', 'ov.ram': 'Memory', 'ov.gpu': 'GPU', 'ov.temp': 'Temperature', 'ov.no_gpu': 'no GPU', 'ov.no_sample': 'No measurement yet.',
  'ov.disk_used': 'Used', 'ov.disk_free': 'Free', 'ov.disk_total': 'Size',
  'ov.llm': 'LLM', 'ov.embeddings': 'Embeddings', 'ov.tps': 'Last speed', 'ov.gpu_load': 'GPU load', 'ov.loaded': 'Models in memory', 'ov.none': 'none', 'ov.not_configured': 'not configured',
  'ov.playground': 'LLM playground', 'ov.link_n8n': 'workflows', 'ov.link_minio': 'file storage', 'ov.link_llm': 'try the language model',
  'disk.ok': 'Enough space', 'disk.warn': 'Getting full (over 80 %)', 'disk.crit': 'Almost full (over 90 %)',
  'net.host': 'Name', 'net.internet': 'Internet', 'net.webhook': 'Webhook (n8n)', 'net.yes': 'yes', 'net.no': 'no',
  'chart.title': 'CPU, memory, GPU and temperature over the last 24 hours', 'chart.cpu': 'CPU %', 'chart.ram': 'Memory %', 'chart.gpu': 'GPU %', 'chart.temp': 'Temperature °C',
  'chart.source': '{n} points from {src}, then live.',
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
  'svc.model': 'Model', 'svc.size': 'Size', 'svc.modified': 'Changed', 'svc.unload': 'Unload', 'svc.delete': 'Delete', 'svc.unload_all': 'Unload all from memory',
  'svc.model_name': 'Model to download', 'svc.pull': 'Download', 'svc.pull_progress': 'Download progress', 'svc.pulling': 'Downloading {m}…', 'svc.pulled': '{m} is ready.',
  'svc.pull_failed': 'Download failed: {e}', 'svc.model_required': 'Enter a model name.', 'svc.no_models': 'No models installed.',
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
};

const de = {
  'nav.label': 'Hauptmenü', 'nav.language': 'Sprache', 'nav.logout': 'Abmelden', 'nav.login': 'Anmelden',
  'nav.overview': 'Übersicht', 'nav.services': 'Dienste', 'nav.healing': 'Selbstheilung', 'nav.updates': 'Updates', 'nav.logs': 'Protokolle', 'nav.settings': 'Einstellungen',
  'common.cancel': 'Abbrechen', 'common.confirm': 'Bestätigen', 'common.loading': 'Lädt…', 'common.next': 'Weiter', 'common.prev': 'Zurück',
  'common.page': 'Seite {p} von {n} ({total} insgesamt)', 'common.unknown': 'unbekannt', 'common.skip': 'Zum Inhalt springen',
  'unit.d': 'T', 'unit.h': 'Std', 'unit.min': 'Min', 'unit.s': 's',
  'err.network': 'Die Box ist nicht erreichbar. Bitte die Netzwerkverbindung prüfen.', 'err.rate': 'Zu viele Anfragen. Bitte in {s} s erneut versuchen.',
  'err.password_policy': 'Das neue Passwort erfüllt die Regeln nicht.', 'err.wrong_current_password': 'Das aktuelle Passwort ist falsch.',
  'err.too_many_attempts': 'Zu viele Fehlversuche. Bitte kurz warten.', 'err.database_unavailable': 'Die Datenbank ist gerade nicht erreichbar.',
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
  'ov.playground': 'LLM-Spielwiese', 'ov.link_n8n': 'Workflows', 'ov.link_minio': 'Dateispeicher', 'ov.link_llm': 'das Sprachmodell ausprobieren',
  'disk.ok': 'Genug Platz', 'disk.warn': 'Wird voll (über 80 %)', 'disk.crit': 'Fast voll (über 90 %)',
  'net.host': 'Name', 'net.internet': 'Internet', 'net.webhook': 'Webhook (n8n)', 'net.yes': 'ja', 'net.no': 'nein',
  'chart.title': 'CPU, Arbeitsspeicher, GPU und Temperatur der letzten 24 Stunden', 'chart.cpu': 'CPU %', 'chart.ram': 'Arbeitsspeicher %', 'chart.gpu': 'GPU %', 'chart.temp': 'Temperatur °C',
  'chart.source': '{n} Punkte aus {src}, danach live.',
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
  'svc.model': 'Modell', 'svc.size': 'Größe', 'svc.modified': 'Geändert', 'svc.unload': 'Entladen', 'svc.delete': 'Löschen', 'svc.unload_all': 'Alle aus dem Speicher entladen',
  'svc.model_name': 'Modell zum Herunterladen', 'svc.pull': 'Herunterladen', 'svc.pull_progress': 'Download-Fortschritt', 'svc.pulling': 'Lade {m}…', 'svc.pulled': '{m} ist bereit.',
  'svc.pull_failed': 'Download fehlgeschlagen: {e}', 'svc.model_required': 'Bitte einen Modellnamen eingeben.', 'svc.no_models': 'Keine Modelle installiert.',
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
};

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

export function lang() { return current; }

export function setLang(l) {
  if (!DICTS[l]) return;
  current = l;
  try { localStorage.setItem(KEY, l); } catch { /* storage off */ }
  document.documentElement.lang = l;
}

/** The string for key in the current language ({name} filled from params). */
/** Whether the current language has its own text for key (no fallback). */
export function has(key) {
  return key in DICTS[current];
}

export function t(key, params) {
  const s = DICTS[current][key] ?? en[key] ?? key;
  return params ? s.replace(/\{(\w+)\}/g, (_, k) => (params[k] ?? `{${k}}`)) : s;
}
