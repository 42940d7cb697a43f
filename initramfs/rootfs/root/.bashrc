# Root shell of the USB4 Recovery appliance.
PS1='usb4-recovery:\w# '
alias ll='ls -l'
