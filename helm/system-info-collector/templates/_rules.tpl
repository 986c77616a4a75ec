{{/*
The alert groups of the PrometheusRule (prometheusrule.yaml). Host alerts follow node-mixin's
(node_exporter's own mixin) on the node_exporter-compatible names; the collector's alerts watch
its sic_* metrics. $s is the selector of the collector's series (prometheus.rules.selector).
tests/integration/test_chart.py renders them and runs `promtool check rules` and
`promtool test rules` (tests/promtool/alerts-test.yml) on them.
*/}}
{{- define "sic.ruleGroups" -}}
{{- $s := include "sic.rulesSelector" . -}}
{{- $fs := printf "%s,fstype!=\"\"" $s -}}
- name: system-info-collector.host
  rules:
    - alert: SICFilesystemSpaceFillingUp
      expr: |-
        (
          node_filesystem_avail_bytes{ {{- $fs -}} } / node_filesystem_size_bytes{ {{- $fs -}} } * 100 < 20
        and
          predict_linear(node_filesystem_avail_bytes{ {{- $fs -}} }[6h], 24*60*60) < 0
        and
          node_filesystem_readonly{ {{- $fs -}} } == 0
        )
      for: 1h
      labels:
        severity: warning
      annotations:
        summary: Filesystem is predicted to run out of space within the next 24 hours.
        description: '{{ "{{" }} $labels.mountpoint {{ "}}" }} ({{ "{{" }} $labels.device {{ "}}" }}) on {{ "{{" }} $labels.instance {{ "}}" }} has {{ "{{" }} printf "%.1f" $value {{ "}}" }}% available space left and is filling up.'
    - alert: SICFilesystemAlmostOutOfSpace
      expr: |-
        (
          node_filesystem_avail_bytes{ {{- $fs -}} } / node_filesystem_size_bytes{ {{- $fs -}} } * 100 < 5
        and
          node_filesystem_readonly{ {{- $fs -}} } == 0
        )
      for: 30m
      labels:
        severity: critical
      annotations:
        summary: Filesystem has less than 5% space left.
        description: '{{ "{{" }} $labels.mountpoint {{ "}}" }} on {{ "{{" }} $labels.instance {{ "}}" }} has {{ "{{" }} printf "%.1f" $value {{ "}}" }}% available space left.'
    - alert: SICFilesystemFilesFillingUp
      expr: |-
        (
          node_filesystem_files_free{ {{- $fs -}} } / node_filesystem_files{ {{- $fs -}} } * 100 < 20
        and
          predict_linear(node_filesystem_files_free{ {{- $fs -}} }[6h], 24*60*60) < 0
        and
          node_filesystem_readonly{ {{- $fs -}} } == 0
        )
      for: 1h
      labels:
        severity: warning
      annotations:
        summary: Filesystem is predicted to run out of inodes within the next 24 hours.
        description: '{{ "{{" }} $labels.mountpoint {{ "}}" }} on {{ "{{" }} $labels.instance {{ "}}" }} has {{ "{{" }} printf "%.1f" $value {{ "}}" }}% inodes left and is filling up.'
    - alert: SICFilesystemAlmostOutOfFiles
      expr: |-
        (
          node_filesystem_files_free{ {{- $fs -}} } / node_filesystem_files{ {{- $fs -}} } * 100 < 5
        and
          node_filesystem_readonly{ {{- $fs -}} } == 0
        )
      for: 30m
      labels:
        severity: critical
      annotations:
        summary: Filesystem has less than 5% inodes left.
        description: '{{ "{{" }} $labels.mountpoint {{ "}}" }} on {{ "{{" }} $labels.instance {{ "}}" }} has {{ "{{" }} printf "%.1f" $value {{ "}}" }}% inodes left.'
    - alert: SICFilesystemReadOnly
      # Went read-only (an ext4 errors=remount-ro, a failing disk): writable at some point in
      # the last 6 hours, read-only now. Read-only by design never fires.
      expr: |-
        node_filesystem_readonly{ {{- $fs -}} } == 1
        and
        min_over_time(node_filesystem_readonly{ {{- $fs -}} }[6h]) == 0
      for: 5m
      labels:
        severity: critical
      annotations:
        summary: Filesystem went read-only.
        description: '{{ "{{" }} $labels.mountpoint {{ "}}" }} ({{ "{{" }} $labels.device {{ "}}" }}) on {{ "{{" }} $labels.instance {{ "}}" }} is read-only now and was writable in the last 6 hours.'
    - alert: SICFilesystemDeviceError
      expr: node_filesystem_device_error{ {{- $fs -}} } == 1
      for: 15m
      labels:
        severity: warning
      annotations:
        summary: Filesystem cannot be measured (statvfs fails or hangs).
        description: '{{ "{{" }} $labels.mountpoint {{ "}}" }} on {{ "{{" }} $labels.instance {{ "}}" }}: statvfs failed or did not return in time for 15 minutes (a dead NFS server?).'
    - alert: SICCPUHighUsage
      expr: |-
        sum without(mode) (avg without(cpu) (rate(node_cpu_seconds_total{ {{- $s -}} , mode!~"idle|iowait"}[2m]))) * 100 > 90
      for: 15m
      labels:
        severity: info
      annotations:
        summary: High CPU usage.
        description: 'CPU usage on {{ "{{" }} $labels.instance {{ "}}" }} has been above 90% for 15 minutes ({{ "{{" }} printf "%.0f" $value {{ "}}" }}%).'
    - alert: SICMemoryHighUtilization
      expr: |-
        100 - (node_memory_MemAvailable_bytes{ {{- $s -}} } / node_memory_MemTotal_bytes{ {{- $s -}} } * 100) > 90
      for: 15m
      labels:
        severity: warning
      annotations:
        summary: Host is running out of memory.
        description: 'Memory on {{ "{{" }} $labels.instance {{ "}}" }} is {{ "{{" }} printf "%.0f" $value {{ "}}" }}% used (MemAvailable below 10%).'
    - alert: SICDiskIOSaturation
      expr: |-
        rate(node_disk_io_time_weighted_seconds_total{ {{- $s -}} }[5m]) > 10
      for: 30m
      labels:
        severity: warning
      annotations:
        summary: Disk IO queue is high.
        description: 'Disk IO queue (aqu-sq) of {{ "{{" }} $labels.device {{ "}}" }} on {{ "{{" }} $labels.instance {{ "}}" }} has been above 10 for 30 minutes ({{ "{{" }} printf "%.1f" $value {{ "}}" }}).'
    - alert: SICNetworkReceiveErrors
      expr: |-
        rate(node_network_receive_errs_total{ {{- $s -}} }[2m]) / rate(node_network_receive_packets_total{ {{- $s -}} }[2m]) * 100 > 1
      for: 1h
      labels:
        severity: warning
      annotations:
        summary: Network interface is reporting many receive errors.
        description: '{{ "{{" }} $labels.device {{ "}}" }} on {{ "{{" }} $labels.instance {{ "}}" }}: {{ "{{" }} printf "%.1f" $value {{ "}}" }} receive errors per 100 packets for an hour.'
    - alert: SICNetworkTransmitErrors
      expr: |-
        rate(node_network_transmit_errs_total{ {{- $s -}} }[2m]) / rate(node_network_transmit_packets_total{ {{- $s -}} }[2m]) * 100 > 1
      for: 1h
      labels:
        severity: warning
      annotations:
        summary: Network interface is reporting many transmit errors.
        description: '{{ "{{" }} $labels.device {{ "}}" }} on {{ "{{" }} $labels.instance {{ "}}" }}: {{ "{{" }} printf "%.1f" $value {{ "}}" }} transmit errors per 100 packets for an hour.'
    - alert: SICRAIDDegraded
      expr: |-
        node_md_disks_required{ {{- $s -}} } - ignoring (state) (node_md_disks{ {{- $s -}} ,state="active"}) > 0
      for: 15m
      labels:
        severity: critical
      annotations:
        summary: RAID array is degraded.
        description: 'RAID array {{ "{{" }} $labels.device {{ "}}" }} on {{ "{{" }} $labels.instance {{ "}}" }} has been missing {{ "{{" }} $value {{ "}}" }} member(s) for 15 minutes; its spares could not replace them.'
    - alert: SICRAIDDiskFailure
      expr: |-
        node_md_disks{ {{- $s -}} ,state="failed"} > 0
      labels:
        severity: warning
      annotations:
        summary: Failed device in RAID array.
        description: 'RAID array {{ "{{" }} $labels.device {{ "}}" }} on {{ "{{" }} $labels.instance {{ "}}" }} has {{ "{{" }} $value {{ "}}" }} failed device(s): it needs attention and possibly a disk swap.'
    - alert: SICClockSkewDetected
      expr: |-
        (
          node_timex_offset_seconds{ {{- $s -}} } > 0.05
        and
          deriv(node_timex_offset_seconds{ {{- $s -}} }[5m]) >= 0
        )
        or
        (
          node_timex_offset_seconds{ {{- $s -}} } < -0.05
        and
          deriv(node_timex_offset_seconds{ {{- $s -}} }[5m]) <= 0
        )
      for: 10m
      labels:
        severity: warning
      annotations:
        summary: Clock skew detected.
        description: 'The clock of {{ "{{" }} $labels.instance {{ "}}" }} is {{ "{{" }} printf "%.3f" $value {{ "}}" }} s off its reference and not converging. Check NTP/chrony on this host.'
    - alert: SICClockNotSynchronising
      expr: |-
        min_over_time(node_timex_sync_status{ {{- $s -}} }[5m]) == 0
        and
        node_timex_maxerror_seconds{ {{- $s -}} } >= 16
      for: 10m
      labels:
        severity: warning
      annotations:
        summary: Clock not synchronising.
        description: 'The clock of {{ "{{" }} $labels.instance {{ "}}" }} is not synchronised to any reference. Check that NTP/chrony runs on this host.'
    - alert: SICSystemSaturation
      expr: |-
        node_load1{ {{- $s -}} } / count without (cpu, mode) (node_cpu_seconds_total{ {{- $s -}} ,mode="idle"}) > 2
      for: 15m
      labels:
        severity: warning
      annotations:
        summary: System saturated, load per core is very high.
        description: 'Load per core on {{ "{{" }} $labels.instance {{ "}}" }} has been above 2 for 15 minutes ({{ "{{" }} printf "%.2f" $value {{ "}}" }} now): the host may become unresponsive.'
    - alert: SICMemoryMajorPagesFaults
      expr: |-
        rate(node_vmstat_pgmajfault{ {{- $s -}} }[5m]) > 500
      for: 15m
      labels:
        severity: warning
      annotations:
        summary: Memory major page faults are occurring at very high rate.
        description: '{{ "{{" }} $labels.instance {{ "}}" }} has had {{ "{{" }} printf "%.0f" $value {{ "}}" }} major page faults a second for 15 minutes: memory pressure (reads from disk for pages evicted).'
    - alert: SICFileDescriptorLimit
      expr: |-
        node_filefd_allocated{ {{- $s -}} } * 100 / node_filefd_maximum{ {{- $s -}} } > 70
      for: 15m
      labels:
        severity: warning
      annotations:
        summary: The kernel is close to its file handle limit.
        description: '{{ "{{" }} printf "%.1f" $value {{ "}}" }}% of the file handles of {{ "{{" }} $labels.instance {{ "}}" }} are allocated (fs.file-max).'
    - alert: SICFileDescriptorLimitCritical
      expr: |-
        node_filefd_allocated{ {{- $s -}} } * 100 / node_filefd_maximum{ {{- $s -}} } > 90
      for: 15m
      labels:
        severity: critical
      annotations:
        summary: The kernel has almost no file handles left.
        description: '{{ "{{" }} printf "%.1f" $value {{ "}}" }}% of the file handles of {{ "{{" }} $labels.instance {{ "}}" }} are allocated (fs.file-max).'
    - alert: SICConntrackEntriesHigh
      expr: |-
        node_nf_conntrack_entries{ {{- $s -}} } / node_nf_conntrack_entries_limit{ {{- $s -}} } > 0.75
      labels:
        severity: warning
      annotations:
        summary: Number of conntrack entries is getting close to the limit.
        description: '{{ "{{" }} $value | humanizePercentage {{ "}}" }} of the conntrack entries of {{ "{{" }} $labels.instance {{ "}}" }} are used (with the sockets collector); new connections are dropped when it is full.'
    - alert: SICNetworkInterfaceFlapping
      expr: |-
        changes(node_network_up{ {{- $s -}} ,device!~"veth.+"}[2m]) > 2
      for: 2m
      labels:
        severity: warning
      annotations:
        summary: Network interface is often changing its status.
        description: '{{ "{{" }} $labels.device {{ "}}" }} on {{ "{{" }} $labels.instance {{ "}}" }} went up or down {{ "{{" }} $value {{ "}}" }} times in 2 minutes.'
    - alert: SICTextfileScrapeError
      expr: |-
        node_textfile_scrape_error{ {{- $s -}} } == 1
      labels:
        severity: warning
      annotations:
        summary: A textfile collector file could not be read.
        description: 'A *.prom file in SIC_TEXTFILE_DIRECTORY on {{ "{{" }} $labels.instance {{ "}}" }} does not parse or the directory is missing; the collector logs which (textfile_failed).'
    - alert: SICBondingDegraded
      expr: |-
        (node_bonding_slaves{ {{- $s -}} } - node_bonding_active{ {{- $s -}} }) != 0
      for: 5m
      labels:
        severity: warning
      annotations:
        summary: Bonding interface is degraded.
        description: 'Bond {{ "{{" }} $labels.master {{ "}}" }} on {{ "{{" }} $labels.instance {{ "}}" }} has {{ "{{" }} $value {{ "}}" }} member(s) down.'
- name: system-info-collector.collector
  rules:
    - alert: SICCollectorDown
      expr: up{ {{- $s -}} } == 0
      for: 5m
      labels:
        severity: critical
      annotations:
        summary: The collector cannot be scraped.
        description: '{{ "{{" }} $labels.instance {{ "}}" }} has not answered /metrics for 5 minutes: no host metrics and no stored records from it.'
    - alert: SICCollectorNotSampling
      expr: time() - sic_last_tick_timestamp_seconds{ {{- $s -}} } > 60
      for: 2m
      labels:
        severity: critical
      annotations:
        summary: The collector answers but does not sample.
        description: '{{ "{{" }} $labels.instance {{ "}}" }} last completed a tick {{ "{{" }} humanizeDuration $value {{ "}}" }} ago.'
    - alert: SICTickOverruns
      expr: increase(sic_tick_overruns_total{ {{- $s -}} }[10m]) > 3
      for: 10m
      labels:
        severity: warning
      annotations:
        summary: Ticks take longer than the sampling interval.
        description: '{{ "{{" }} $labels.instance {{ "}}" }} overran {{ "{{" }} printf "%.0f" $value {{ "}}" }} ticks in 10 minutes: slots are skipped (a slow mount? a starved CPU limit?).'
    - alert: SICSinkDegraded
      expr: sic_sink_degraded{ {{- $s -}} } == 1
      for: 5m
      labels:
        severity: warning
      annotations:
        summary: A sink keeps failing.
        description: 'Sink {{ "{{" }} $labels.sink {{ "}}" }} on {{ "{{" }} $labels.instance {{ "}}" }} has failed every retry for 5 minutes; records wait in its backlog or spool.'
    - alert: SICSpoolGrowing
      expr: |-
        sic_spool_bytes{ {{- $s -}} } > 0 and deriv(sic_spool_bytes{ {{- $s -}} }[15m]) > 0
      for: 30m
      labels:
        severity: warning
      annotations:
        summary: A write-ahead spool keeps growing.
        description: 'The {{ "{{" }} $labels.sink {{ "}}" }} spool on {{ "{{" }} $labels.instance {{ "}}" }} has grown for 30 minutes to {{ "{{" }} humanize1024 $value {{ "}}" }}B: the destination is not taking the records; at its spool size limit (SIC_DB_SPOOL_MAX_SIZE, SIC_<SINK>_SPOOL_MAX_SIZE) the oldest are dropped.'
    - alert: SICSpoolDamaged
      expr: increase(sic_spool_damage_events_total{ {{- $s -}} }[1h]) > 0
      labels:
        severity: warning
      annotations:
        summary: The spool's files were changed under the collector.
        description: 'The {{ "{{" }} $labels.sink {{ "}}" }} spool on {{ "{{" }} $labels.instance {{ "}}" }}: its files were truncated, removed or damaged while the collector ran; records in them may be lost (see the collector log).'
    - alert: SICDatabaseRowsHeld
      expr: increase(sic_db_held_rows_total{ {{- $s -}} }[5m]) > 0
      for: 15m
      labels:
        severity: warning
      annotations:
        summary: A PostgreSQL table does not match the collector's schema; its rows are held.
        description: '{{ "{{" }} $labels.instance {{ "}}" }} held {{ "{{" }} printf "%.0f" $value {{ "}}" }} rows in 5 minutes, and has for 15, in held.jsonl in its spool directory: a table was altered (see ERROR postgres_table_held, or run `system-info-collector check`). They are written once the table matches again; beyond SIC_DB_SPOOL_MAX_SIZE new ones are dropped.'
    - alert: SICSamplesDropped
      expr: |-
        increase(sic_sink_records_dropped_total{ {{- $s -}} }[10m]) > 0
        or increase(sic_spool_dropped_records_total{ {{- $s -}} }[10m]) > 0
        or increase(sic_records_dropped_total{ {{- $s -}} }[10m]) > 0
      labels:
        severity: warning
      annotations:
        summary: Records are being lost or rejected.
        description: '{{ "{{" }} $labels.instance {{ "}}" }} dropped {{ "{{" }} printf "%.0f" $value {{ "}}" }} records in 10 minutes (sink backlog overflow, spool full, or invalid samples).'
{{- end }}
